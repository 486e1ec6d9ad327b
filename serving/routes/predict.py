"""Predictions: one car, a batch of cars as JSON, or a CSV upload."""

from __future__ import annotations

import asyncio
import io
from typing import Annotated, Any

import numpy as np
import pandas as pd
import pydantic_core
from fastapi import APIRouter, Depends, File, HTTPException, Response, UploadFile, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from co2 import columns as col
from co2.model import input_columns
from serving import metrics
from serving.bodies import FastJSONRoute
from serving.deps import BatcherDep, CurrentModel, require_api_key
from serving.registry import LoadedModel
from serving.schemas import MAX_BATCH_CARS, BatchPrediction, BatchRequest, Car, Prediction

router = APIRouter(
    prefix="/predict", tags=["predict"], dependencies=[Depends(require_api_key)], route_class=FastJSONRoute
)
CSV_MAX_BYTES = 20 * 1024 * 1024


def _label(response: Response, model: LoadedModel) -> None:
    response.headers["X-Model-Name"] = model.name
    response.headers["X-Model-Version"] = model.version


@router.post("", response_model=Prediction, summary="Predict one car's WLTP CO2")
async def predict(car: Car, response: Response, batcher: BatcherDep, _: CurrentModel) -> Prediction:
    """Predict the WLTP CO2 of one car with the production model."""
    value, model = await batcher.predict(vars(car))  # the fields, without model_dump's copy
    _label(response, model)
    return Prediction(co2_wltp_g_km=round(value, 2), model_name=model.name, model_version=model.version)


async def _predict_cars(cars: list[Car], model: LoadedModel) -> Response:
    columns = input_columns([vars(car) for car in cars])  # the fields, without model_dump's copy
    values = await asyncio.to_thread(model.predict, columns)
    metrics.observe_predictions(model.input_ranges, columns, values)
    # built directly: validating 10,000 response items again would cost more than predicting them
    body = {
        "predictions": [{"co2_wltp_g_km": v} for v in np.round(values, 2).tolist()],
        "model_name": model.name,
        "model_version": model.version,
    }
    response = Response(pydantic_core.to_json(body), media_type="application/json")
    _label(response, model)
    return response


@router.post("/batch", response_model=BatchPrediction, summary=f"Predict up to {MAX_BATCH_CARS:,} cars")
async def predict_batch(body: BatchRequest, model: CurrentModel) -> Response:
    """Predict many cars in one vectorised call; answers are in the order of the request."""
    return await _predict_cars(body.cars, model)


@router.post("/batch/csv", response_model=BatchPrediction, summary="Predict the cars of a CSV file")
async def predict_csv(
    model: CurrentModel,
    file: Annotated[UploadFile, File(description="CSV with a header: the JSON field names, or the EEA's column names")],
) -> Response:
    """Predict every row of an uploaded CSV (same fields as /predict/batch, or EEA column names)."""
    content = await file.read(CSV_MAX_BYTES + 1)
    if len(content) > CSV_MAX_BYTES:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"CSV larger than {CSV_MAX_BYTES // 2**20} MiB")
    try:
        table = pd.read_csv(io.BytesIO(content))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestValidationError([_error(["body", "file"], f"not a readable CSV: {exc}")]) from None
    table = table.rename(columns={**col.SOURCE_TO_DOMAIN, "Mk": col.MAKE})
    missing = [name for name in (col.FUEL_TYPE,) if name not in table.columns]
    unknown = [str(name) for name in table.columns if name not in col.MODEL_INPUT_COLUMNS]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(unknown)}; allowed: {', '.join(col.MODEL_INPUT_COLUMNS)}")
        raise RequestValidationError([_error(["body", "file"], "; ".join(problems))])
    records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    try:
        body = BatchRequest.model_validate({"cars": records})
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
    return await _predict_cars(body.cars, model)


def _error(loc: list[Any], message: str) -> dict[str, Any]:
    return {"loc": loc, "msg": message, "type": "value_error"}
