"""One car cannot fail the others: input bounds are the physical ones, and a car the model cannot
predict fails its own request only, never the requests batched with it."""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from co2.mlflow_utils import log_model
from co2.settings import Settings
from co2_model import columns as col
from co2_model.model import input_columns, predict_columns
from co2_model.vocabulary import FUEL_TYPES, HYBRID_FUEL_TYPES
from serving.schemas import Car
from tests.serving.conftest import promote, ready_version, running_service, wait_for

GOOD = [
    {"fuel_type": "PETROL", "mass_kg": 1100 + 10 * i, "engine_power_kw": 60 + i, "fuel_consumption_l_100km": 5.5}
    for i in range(60)
]
LPG = {"fuel_type": "LPG", "mass_kg": 1300, "engine_power_kw": 80}
BI_FUEL = {"fuel_type": "PETROL", "fuel_mode": "B", "mass_kg": 1300, "engine_power_kw": 80}


def post_together(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Every body to /predict at the same moment, each on its own connection."""
    start = threading.Barrier(len(bodies))

    def post(body: dict[str, Any]) -> httpx.Response:
        with httpx.Client(timeout=30) as client:
            start.wait()
            return client.post(f"{url}/predict", json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def test_a_car_that_fails_the_model_fails_alone(service_settings: Settings, model_uris, sample_splits) -> None:  # type: ignore[no-untyped-def]
    uri = service_settings.mlflow_tracking_uri
    first = promote(uri, service_settings.model_name, model_uris["knn"])
    # A real model whose learned parameters went wrong: an LPG car makes it raise (its carbon
    # factor is not a number), a bi-fuel car makes it answer infinity (log CO2 weighs its fuel mode
    # by 1e6); every other car is predicted as usual.
    model = copy.deepcopy(mlflow.sklearn.load_model(model_uris["linear_regression"]))
    model.named_steps["features"].co2_per_litre_["lpg"] = "not a number"
    inner = model.named_steps["regressor"].regressor_
    bi_fuel = list(inner.named_steps["encode"].get_feature_names_out()).index("categorical__fuel_mode_B")
    inner.named_steps["regressor"].coef_[bi_fuel] = 1e6
    test = sample_splits[1]
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        faulty = log_model(model, test[test[col.FUEL_TYPE] == "petrol"][col.MODEL_INPUT_COLUMNS].head(5))
    with running_service(service_settings) as url:
        wait_for(lambda: ready_version(url) == first, 30)
        # out of the physical range, refused by validation: once it failed all 60 batched with it
        poisoned = {**GOOD[0], "engine_capacity_cm3": 999, "engine_power_kw": 1e-306}
        answers = post_together(url, [*GOOD, poisoned])
        assert [a.status_code for a in answers] == [200] * 60 + [422]
        assert answers[-1].json()["detail"][0]["loc"] == ["body", "engine_power_kw"]

        second = promote(uri, service_settings.model_name, faulty)
        wait_for(lambda: ready_version(url) == second, 30)
        answers = post_together(url, [*GOOD, LPG, BI_FUEL])
        assert [a.status_code for a in answers[:60]] == [200] * 60, [a.text[:200] for a in answers if a.is_error][:3]
        assert {a.headers["X-Model-Version"] for a in answers[:60]} == {second}
        for refused in answers[60:]:
            assert refused.status_code == 422, refused.text[:300]
            assert refused.json()["detail"][0]["type"] == "unpredictable_car"

        batch = httpx.post(f"{url}/predict/batch", json={"cars": [GOOD[0], LPG, GOOD[1], BI_FUEL]}, timeout=30)
        assert batch.status_code == 422, batch.text[:300]
        assert [e["loc"] for e in batch.json()["detail"]] == [["body", "cars", 1], ["body", "cars", 3]]
        fine = httpx.post(f"{url}/predict/batch", json={"cars": GOOD}, timeout=30)
        assert fine.status_code == 200 and len(fine.json()["predictions"]) == 60
        scraped = httpx.get(f"{url}/metrics").text
    assert "co2_predictions_total" in scraped and "NaN" not in scraped


def _bounds(field: str) -> tuple[float, float, bool]:
    """What the service accepts for a numeric field, from its own OpenAPI schema."""
    schema = next(s for s in Car.model_json_schema()["properties"][field]["anyOf"] if s.get("type") == "number")
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    return float(low), float(schema["maximum"]), "exclusiveMinimum" in schema


def _car() -> st.SearchStrategy[dict[str, Any]]:
    """Cars the service accepts, ranges from its schema: edges, tiny and huge values included."""
    numbers = {}
    for name in col.NUMERIC_FEATURES:
        low, high, exclusive = _bounds(name)
        numbers[name] = st.none() | st.floats(low, high, exclude_min=exclusive, allow_nan=False)
    words = {
        "fuel_type": st.sampled_from(FUEL_TYPES).map(str.upper),
        "fuel_mode": st.none() | st.sampled_from("MBFHPE"),
        "make": st.none() | st.sampled_from(["VW", "SKODA", "TESLA", "UNHEARD OF"]),
    }
    # a hybrid fuel type alone does not say whether the car is a plug-in: hybrids state their mode
    return st.fixed_dictionaries({**numbers, **words}).filter(
        lambda car: car["fuel_mode"] is not None or car["fuel_type"].lower() not in HYBRID_FUEL_TYPES
    )


def test_every_car_the_service_accepts_is_predicted_finitely(model_uris) -> None:  # type: ignore[no-untyped-def]
    """Fuzzing over the accepted ranges: the linear and KNN models neither raise nor answer NaN or infinity."""
    models = {family: mlflow.sklearn.load_model(model_uris[family]) for family in ("knn", "linear_regression")}

    @given(cars=st.lists(_car(), min_size=1, max_size=30))
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
    def predicts(cars: list[dict[str, Any]]) -> None:
        rows = [vars(Car.model_validate(car)) for car in cars]  # valid by construction
        for family, model in models.items():
            values = predict_columns(model, input_columns(rows))
            assert np.isfinite(values).all(), (family, [rows[i] for i in np.flatnonzero(~np.isfinite(values))])

    predicts()


def test_input_ranges_are_declared_once() -> None:
    """The service's bounds, the raw data's validation and the column names all come from co2_model.inputs."""
    from co2.pipeline.validate import OPTIONAL_RULES, SCHEMA
    from co2_model.inputs import MEASURED_INPUTS

    rules = {rule.name: rule for rule in (*SCHEMA, *OPTIONAL_RULES)}
    numeric = {name for name, field in Car.model_fields.items() if field.annotation == float | None}
    assert numeric == {declared.name for declared in MEASURED_INPUTS}
    for declared in MEASURED_INPUTS:
        assert _bounds(declared.name) == (declared.minimum, declared.maximum, False)
        rule = rules[declared.eea_column]
        assert (rule.minimum, rule.maximum) == (declared.minimum, declared.maximum)
        assert col.SOURCE_TO_DOMAIN[declared.eea_column] == declared.name
    frame = pd.DataFrame([{d.name: d.maximum for d in MEASURED_INPUTS} | {"fuel_type": "petrol"}])
    assert Car.model_validate(frame.iloc[0].to_dict()).mass_kg == 7_000
