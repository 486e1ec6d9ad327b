"""A candidate's figures come out the same whether the model is asked once per caller or per figure."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from co2.evaluation import calibrate_and_score, calibrate_intervals, calibration_rows, describe, predictions
from co2_model import columns as col
from co2_model.model import build_model, fit


@pytest.mark.parametrize("family", ["knn", "linear_regression"])
def test_calibrating_and_scoring_in_one_pass_gives_the_three_calls_figures(
    processed_sample: dict[str, Any], family: str
) -> None:
    train, test = processed_sample["train"], processed_sample["test"]
    weights = None if family == "knn" else train[col.REGISTRATIONS]
    fitted = fit(build_model(family, True), train[col.MODEL_INPUT_COLUMNS], train[col.TARGET], weights)
    calibration = calibration_rows(test, "co2")
    one_pass, two_passes = copy.deepcopy(fitted), copy.deepcopy(fitted)

    predicted, details = calibrate_and_score(one_pass, test, calibration)

    calibrate_intervals(two_passes, test, calibration)
    expected = predictions(two_passes, test[col.MODEL_INPUT_COLUMNS])
    np.testing.assert_allclose(predicted, expected, rtol=1e-12, equal_nan=True)
    assert details == pytest.approx(describe(two_passes, test, ~calibration), rel=1e-12, nan_ok=True)
    widths = one_pass.named_steps["regressor"].interval_half_widths_g_km_
    assert widths == two_passes.named_steps["regressor"].interval_half_widths_g_km_
    assert len(widths) > 3  # calibrated per method and fuel group, not only overall
