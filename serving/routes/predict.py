"""Predictions: one car, a batch of cars as JSON, or a CSV upload."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import pandas as pd
import pydantic_core
from fastapi import APIRouter, Depends, File, HTTPException, Response, UploadFile, status
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from co2_model import columns as col
from co2_model.model import AMBIGUITY_FIELD, AMBIGUITY_MESSAGE, Answers
from serving import metrics
from serving.batching import AmbiguousCarError, CarAnswer, NoModelError, UnpredictableCarError, predict_each
from serving.bodies import FastJSONRoute
from serving.deps import BatcherDep, CurrentModel, no_model_yet, require_api_key
from serving.limits import CSV_BYTES
from serving.registry import LoadedModel
from serving.schemas import MAX_BATCH_CARS, BatchPrediction, BatchRequest, Car, Prediction

router = APIRouter(
    prefix="/predict", tags=["predict"], dependencies=[Depends(require_api_key)], route_class=FastJSONRoute
)
CARS = TypeAdapter(list[Car])
VALIDATION_SLICE_CARS = 500
UNPREDICTABLE = "the model could not predict this car (its inputs are valid: the failure is logged)"


def _answered(body: dict[str, Any], model: LoadedModel) -> Response:
    """The JSON answer, labelled with the version that made it.

    Built directly, not through the route's response model: the body is made of the model's own
    numbers, and validating it again costs more than a single car's prediction.
    """
    body["model_name"], body["model_version"] = model.name, model.version
    return Response(
        pydantic_core.to_json(body),
        media_type="application/json",
        headers={"X-Model-Name": model.name, "X-Model-Version": model.version},
    )


@router.post("", response_model=Prediction, summary="Predict one car's WLTP CO2")
async def predict(car: Car, batcher: BatcherDep) -> Response:
    """Predict the WLTP CO2 of one car with the production model."""
    try:
        answer, model = await batcher.predict(vars(car))  # the fields, without model_dump's copy
    except NoModelError:
        raise no_model_yet() from None
    except AmbiguousCarError:
        raise RequestValidationError([_error(["body", AMBIGUITY_FIELD], AMBIGUITY_MESSAGE, "ambiguous_car")]) from None
    except UnpredictableCarError:
        raise RequestValidationError([_error(["body"], UNPREDICTABLE, "unpredictable_car")]) from None
    return _answered(_answer_fields(answer), model)


def _answers_json(answers: Answers) -> list[dict[str, Any]]:
    """Many answers as the API gives them, rounded in one pass (a 10,000-car batch is on the clock)."""
    co2 = np.round(answers.co2_g_km, 2).tolist()
    lower, upper = (
        [None if v != v else v for v in np.round(x, 2).tolist()] for x in (answers.lower_g_km, answers.upper_g_km)
    )
    return [
        {"co2_wltp_g_km": c, "co2_lower_g_km": lo, "co2_upper_g_km": hi, "method": m}
        for c, lo, hi, m in zip(co2, lower, upper, answers.method.tolist(), strict=True)
    ]


def _answer_fields(answer: CarAnswer) -> dict[str, Any]:
    """An answer as the API gives it: to 0.01 g/km, null where the model has no interval."""
    return {
        "co2_wltp_g_km": round(answer.co2_g_km, 2),
        "co2_lower_g_km": None if np.isnan(answer.lower_g_km) else round(answer.lower_g_km, 2),
        "co2_upper_g_km": None if np.isnan(answer.upper_g_km) else round(answer.upper_g_km, 2),
        "method": answer.method,
    }


async def _predict_cars(cars: list[Car], model: LoadedModel) -> Response:
    rows = [vars(car) for car in cars]  # the fields, without model_dump's copy
    predicted = await asyncio.to_thread(predict_each, model, rows)
    values = predicted.co2_g_km
    metrics.observe_predictions(model.input_ranges, predicted.cars, values)
    if np.isnan(values).any():
        raise RequestValidationError(
            [
                _error(["body", "cars", i, AMBIGUITY_FIELD], AMBIGUITY_MESSAGE, "ambiguous_car")
                if predicted.ambiguous[i]
                else _error(["body", "cars", i], UNPREDICTABLE, "unpredictable_car")
                for i in np.flatnonzero(np.isnan(values)).tolist()
            ]
        )
    return _answered({"predictions": _answers_json(predicted.answers)}, model)


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
    content = await file.read(CSV_BYTES + 1)
    if len(content) > CSV_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"CSV larger than the {CSV_BYTES:,} bytes that {MAX_BATCH_CARS:,} cars can need",
        )
    # parsing and validating thousands of rows takes a while: not on the event loop
    cars = await asyncio.to_thread(_cars_of_csv, content)
    return await _predict_cars(cars, model)


def _cars_of_csv(content: bytes) -> list[Car]:
    """The cars of a CSV upload; a 413 beyond MAX_BATCH_CARS rows, a 422 naming what is wrong."""
    _check_columns(_header(content))  # before pandas reads anything: a hostile header costs nothing
    try:
        # one row more than allowed tells that there are too many, without reading them all
        table = pd.read_csv(io.BytesIO(content), nrows=MAX_BATCH_CARS + 1)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestValidationError([_error(["body", "file"], f"not a readable CSV: {str(exc)[:200]}")]) from None
    if len(table) > MAX_BATCH_CARS:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"more than {MAX_BATCH_CARS:,} cars; send at most that many per request"
        )
    table = table.rename(columns=col.SOURCE_TO_DOMAIN)
    _check_columns([str(name) for name in table.columns])
    records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    cars: list[Car] = []
    errors: list[Any] = []
    # in slices: validation holds the interpreter lock for a whole call, the event loop waits that long
    for start in range(0, len(records), VALIDATION_SLICE_CARS):
        try:
            cars += CARS.validate_python(records[start : start + VALIDATION_SLICE_CARS])
        except ValidationError as exc:
            errors += [
                {**error, "loc": ("cars", start + int(error["loc"][0]), *error["loc"][1:])}
                for error in exc.errors(include_url=False, include_context=False, include_input=False)
            ]
    if errors:
        raise RequestValidationError(errors)
    return cars


def _header(content: bytes) -> list[str]:
    """The CSV's column names, read from its first line."""
    if not content.strip():
        raise RequestValidationError([_error(["body", "file"], "not a readable CSV: it is empty")])
    try:
        first_line = re.split(rb"\r\n|\r|\n", content, maxsplit=1)[0].decode("utf-8-sig")
        return next(csv.reader([first_line]), [])
    except UnicodeDecodeError:
        raise RequestValidationError([_error(["body", "file"], "not a readable CSV: not UTF-8 text")]) from None
    except csv.Error as exc:
        raise RequestValidationError([_error(["body", "file"], f"not a readable CSV: {exc}")]) from None


def _check_columns(names: list[str]) -> None:
    """A 422 unless the columns are known names (ours or the EEA's), each once, fuel type among them."""
    columns = [col.SOURCE_TO_DOMAIN.get(name, name) for name in names]
    problems = []
    if col.FUEL_TYPE not in columns:
        problems.append(f"missing column(s) {col.FUEL_TYPE}")
    if unknown := [name for name in names if col.SOURCE_TO_DOMAIN.get(name, name) not in col.MODEL_INPUT_COLUMNS]:
        problems.append(
            f"unknown column(s) {_some(unknown)}; allowed: {', '.join(col.MODEL_INPUT_COLUMNS)} or their EEA names"
        )
    if twice := sorted(name for name, times in Counter(columns).items() if times > 1):
        problems.append(f"column(s) given twice: {_some(twice)}")
    if problems:
        raise RequestValidationError([_error(["body", "file"], "; ".join(problems))])


def _some(names: Sequence[str], shown: int = 5, width: int = 40) -> str:
    """A few names, each cut short: the answer must not echo a hostile header back."""
    listed = ", ".join(name if len(name) <= width else f"{name[:width]}…" for name in names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _error(loc: list[Any], message: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": loc, "msg": message, "type": kind}
