"""Metrics per car: every configuration counts as many times as it was registered."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from co2 import columns as col


def score(y_true: Any, y_pred: Any, registrations: Any) -> dict[str, float]:
    """MAE, RMSE (g/km) and R² weighted by registrations."""
    weights = np.asarray(registrations, dtype=np.float64)
    return {
        "mae_g_km": float(mean_absolute_error(y_true, y_pred, sample_weight=weights)),
        "rmse_g_km": float(np.sqrt(mean_squared_error(y_true, y_pred, sample_weight=weights))),
        "r2": float(r2_score(y_true, y_pred, sample_weight=weights)),
    }


def evaluate(model: Any, test: pd.DataFrame) -> dict[str, float]:
    """Score any object with `predict(DataFrame)` (a fitted estimator or an MLflow pyfunc) on a split."""
    predictions = np.asarray(model.predict(test[col.MODEL_INPUT_COLUMNS]), dtype=np.float64).ravel()
    return score(test[col.TARGET], predictions, test[col.REGISTRATIONS])
