"""Metrics per car: every configuration counts as many times as it was registered."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from co2_model import columns as col
from co2_model.model import OUTPUT_COLUMNS, Answers, Points, answer_columns, points_of

# The test split is halved by configuration: one half calibrates the intervals, the other
# measures how often they hold (cars the intervals were not calibrated on).
CALIBRATION_SHARE = 0.5
# Groups the errors are reported by, in MLflow as `mae_g_km.<column>.<value>`.
ERROR_GROUPS = (col.FUEL_TYPE, "fuel_mode", col.MEMBER_STATE, col.YEAR)


def score(y_true: Any, y_pred: Any, registrations: Any) -> dict[str, float]:
    """MAE, RMSE (g/km) and R² weighted by registrations."""
    weights = np.asarray(registrations, dtype=np.float64)
    return {
        "mae_g_km": float(mean_absolute_error(y_true, y_pred, sample_weight=weights)),
        "rmse_g_km": float(np.sqrt(mean_squared_error(y_true, y_pred, sample_weight=weights))),
        "r2": float(r2_score(y_true, y_pred, sample_weight=weights)),
    }


def calibration_rows(test: pd.DataFrame, salt: str) -> np.ndarray:
    """The half of the test split that calibrates the intervals, by configuration (stable across runs)."""
    from co2.pipeline.preprocess import configuration_bucket

    return configuration_bucket(test, f"{salt}/calibration") < CALIBRATION_SHARE


def calibrate_intervals(model: Any, test: pd.DataFrame, rows: np.ndarray) -> Any:
    """Calibrate a fitted model's intervals on `rows` of the test split, as callers with every field
    and callers with only a car's papers send them."""
    cars = test[rows]
    _calibrate_on(model, points_of(model, cars[col.MODEL_INPUT_COLUMNS]), points_of(model, basic_inputs(cars)), cars)
    return model


def _calibrate_on(model: Any, full: Points, basic: Points, cars: pd.DataFrame) -> None:
    """Calibrate on `cars` from their points as both callers send them: every field (`full`), their papers."""
    model.named_steps["regressor"].calibrate_points(
        Points.joined(full, basic),
        pd.concat([cars[col.TARGET]] * 2, ignore_index=True),
        pd.concat([cars[col.REGISTRATIONS]] * 2, ignore_index=True),
    )


def predictions(model: Any, inputs: pd.DataFrame) -> np.ndarray:
    """The WLTP CO2 `model.predict` gives (a fitted estimator or an MLflow pyfunc; older versions
    answer with the CO2 alone, newer ones with a table of CO2, interval and method)."""
    predicted = model.predict(inputs)
    if isinstance(predicted, pd.DataFrame):
        predicted = predicted[OUTPUT_COLUMNS[0]]
    return np.asarray(predicted, dtype=np.float64).ravel()


def evaluate(model: Any, test: pd.DataFrame) -> dict[str, float]:
    """Score any object with `predict(DataFrame)` on a split, over the cars it answers."""
    return score_predictions(test, predictions(model, test[col.MODEL_INPUT_COLUMNS]))


def score_predictions(test: pd.DataFrame, predicted: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² of a split's predictions, over the cars answered (a NaN is a refusal)."""
    answered = ~np.isnan(predicted)
    return score(test[col.TARGET][answered], predicted[answered], test[col.REGISTRATIONS][answered])


def basic_inputs(test: pd.DataFrame) -> pd.DataFrame:
    """The inputs as a caller with only a car's papers sends them (`col.BASIC_INPUT_COLUMNS`)."""
    inputs = test[col.MODEL_INPUT_COLUMNS].copy()
    for name in col.MODEL_INPUT_COLUMNS:
        if name not in col.BASIC_INPUT_COLUMNS:
            inputs[name] = np.nan if name in col.NUMERIC_FEATURES else None
    return inputs


def coverage_pct(answers: Answers, y: Any, registrations: Any) -> float:
    """Share of answered cars (weighted) whose WLTP CO2 lies inside the stated interval, in %."""
    actual = np.asarray(y, dtype=np.float64)
    weights = np.asarray(registrations, dtype=np.float64)
    answered = ~np.isnan(answers.co2_g_km)
    inside = (actual >= answers.lower_g_km - 1e-9) & (actual <= answers.upper_g_km + 1e-9)
    return float(100.0 * weights[answered & inside].sum() / weights[answered].sum())


def group_mae(test: pd.DataFrame, predicted: np.ndarray, by: str) -> dict[str, float]:
    """Weighted MAE per value of `by` (over answered cars): where the model is wrong."""
    answered = ~np.isnan(predicted)
    error = np.abs(predicted - test[col.TARGET].to_numpy(dtype=np.float64))
    frame = pd.DataFrame(
        {"key": test[by].astype("string").fillna("missing").to_numpy(), "error": error, "w": test[col.REGISTRATIONS]}
    )[answered]
    sums = (frame["error"] * frame["w"]).groupby(frame["key"]).sum() / frame.groupby("key")["w"].sum()
    return {str(key): float(value) for key, value in sums.items()}


def calibrate_and_score(model: Any, test: pd.DataFrame, calibration: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """A candidate built by `build_model`: `calibrate_intervals` on the `calibration` rows, then its
    predictions of the test split and `describe`, with the model asked once per car and caller (every
    field, a car's papers) instead of four times: a neighbours model spends a minute on each pass over
    a year's test split. Same figures as the three calls."""
    full_points = points_of(model, test[col.MODEL_INPUT_COLUMNS])
    basic_points = points_of(model, basic_inputs(test))
    _calibrate_on(model, full_points.take(calibration), basic_points.take(calibration), test[calibration])
    regressor = model.named_steps["regressor"]
    full, basic = regressor.answer_points(full_points), regressor.answer_points(basic_points)
    return full.co2_g_km, describe_answers(test, full, basic, ~calibration)


def describe(model: Any, test: pd.DataFrame, evaluation: np.ndarray) -> dict[str, float]:
    """What a candidate's run logs beside MAE/RMSE/R²: interval coverage on `evaluation` (the half
    of the test split its intervals were not calibrated on), the basic caller's figures, and the
    MAE per fuel type, fuel mode, member state and registration year."""
    full = answer_columns(model, test[col.MODEL_INPUT_COLUMNS])
    return describe_answers(test, full, answer_columns(model, basic_inputs(test)), evaluation)


def describe_answers(test: pd.DataFrame, full: Answers, basic: Answers, evaluation: np.ndarray) -> dict[str, float]:
    """`describe` from the answers to the test split's cars with every field (`full`) and with their papers."""
    weights = test[col.REGISTRATIONS].to_numpy(dtype=np.float64)
    y = test[col.TARGET].to_numpy(dtype=np.float64)
    answered = ~np.isnan(basic.co2_g_km)
    out = {
        "interval_coverage_pct": coverage_pct(_rows(full, evaluation), y[evaluation], weights[evaluation]),
        **{f"basic_{k}": v for k, v in score(y[answered], basic.co2_g_km[answered], weights[answered]).items()},
        "basic_refused_pct": float(100.0 * weights[~answered].sum() / weights.sum()),
        "basic_interval_coverage_pct": coverage_pct(_rows(basic, evaluation), y[evaluation], weights[evaluation]),
    }
    for by in ERROR_GROUPS:
        if by in test.columns:
            out.update({f"mae_g_km.{by}.{key}": v for key, v in group_mae(test, full.co2_g_km, by).items()})
    return out


def _rows(answers: Answers, mask: np.ndarray) -> Answers:
    return Answers(answers.co2_g_km[mask], answers.lower_g_km[mask], answers.upper_g_km[mask], answers.method[mask])
