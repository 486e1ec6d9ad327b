"""The framework's floor: FastAPI and uvicorn validating the service's `Car` and answering a constant.

`serving_vs_mlflow_serve.py` measures it beside the service in the same run. No service on this
stack answers a car faster, so its figures say how much of a latency target the machine leaves
at that moment, whatever the model costs.

    uvicorn fastapi_floor:app --app-dir bench
"""

from __future__ import annotations

from fastapi import FastAPI

from serving.schemas import Car, Prediction

app = FastAPI(title="FastAPI floor")


@app.post("/predict", response_model=Prediction)
async def predict(car: Car) -> Prediction:
    return Prediction(
        co2_wltp_g_km=0.0,
        co2_lower_g_km=None,
        co2_upper_g_km=None,
        method="constant",
        model_name="floor",
        model_version="0",
    )
