"""The run report from the real sample and real candidates, without MLflow: what a person opens."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from co2 import drift
from co2.evaluation import predictions, score_predictions
from co2.pipeline.preprocess import aggregate
from co2.pipeline.report import candidates_table, compose
from co2_model import columns as col
from co2_model.model import build_model, fit


@pytest.fixture(scope="module")
def candidates(processed_sample: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Two real linear candidates ranked as `compare` ranks them, and their test-split predictions."""
    train = aggregate(processed_sample["train"].drop(columns=[col.YEAR]))
    test = processed_sample["test"]
    ranking, predicted = [], {}
    for with_make in (False, True):
        name = f"linear_regression{'_with_make' if with_make else ''}"
        model = fit(
            build_model("linear_regression", with_make),
            train[col.MODEL_INPUT_COLUMNS],
            train[col.TARGET],
            train[col.REGISTRATIONS],
        )
        predicted[name] = predictions(model, test[col.MODEL_INPUT_COLUMNS])
        ranking.append(
            {
                "name": name,
                "run_id": f"run-{name}",
                **score_predictions(test, predicted[name]),
                "backtest_mae_g_km": None,
                "train_seconds": 1.0,
            }
        )
    ranking.sort(key=lambda c: c["mae_g_km"])
    comparison = {
        "ranking": ranking,
        "winner": ranking[0],
        "promote": True,
        "champion_version": None,
        "champion_metrics": None,
        "reason": "no production model yet; <b>first</b>",
    }
    return comparison, predicted


def table_rows(page: str) -> list[list[str]]:
    first = re.search(r"<table.*?</table>", page, re.S)
    assert first
    return [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S) for row in re.findall(r"<tr.*?</tr>", first[0], re.S)]


def test_first_report_shows_data_and_candidates_in_one_self_contained_page(
    processed_sample: dict[str, Any], candidates: tuple[dict[str, Any], dict[str, np.ndarray]]
) -> None:
    comparison, predicted = candidates
    files = compose(
        comparison,
        processed_sample["lineage"],
        processed_sample["train"],
        processed_sample["test"],
        predicted,
        None,
        "no production model yet: nothing to compare the data with",
    )
    assert set(files.figures) == {"candidates.png", "data.png", *(f"candidate_{n}.png" for n in predicted)}
    assert all(data.startswith(b"\x89PNG\r\n\x1a\n") for data in files.figures.values())
    page = files.page
    assert not re.findall(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", page) and "url(" not in page
    assert page.count('src="data:image/png;base64,') == len(files.figures)
    assert "&lt;b&gt;first&lt;/b&gt;" in page and "<b>first</b>" not in page  # the reason is text, not markup
    header, *rows = table_rows(page)
    assert header[:4] == ["candidate", "mae_g_km", "rmse_g_km", "r2"]
    shown = candidates_table(comparison)
    assert [row[0] for row in rows] == [c["name"] for c in comparison["ranking"]]
    for row, (_, expected) in zip(rows, shown.iterrows(), strict=True):
        assert [float(cell) for cell in row[1:4]] == [expected["mae_g_km"], expected["rmse_g_km"], expected["r2"]]
    assert files.shifts == [] and "nothing to compare the data with" in page
    assert files.profile == drift.profile(processed_sample["train"])  # what the next run compares itself with


def test_report_against_production_lists_the_shifted_input_first(
    processed_sample: dict[str, Any], candidates: tuple[dict[str, Any], dict[str, np.ndarray]]
) -> None:
    comparison, predicted = candidates
    train = processed_sample["train"]
    lighter = drift.profile(train.assign(mass_kg=train["mass_kg"] / 1.3))  # production saw lighter cars
    champion = {**comparison, "champion_version": "4", "champion_metrics": dict(comparison["winner"])}
    files = compose(
        champion,
        processed_sample["lineage"],
        train,
        processed_sample["test"],
        predicted,
        lighter,
        "production's training data (version 4)",
    )
    assert "drift.png" in files.figures
    assert files.summary["shifts"][0]["feature"] == "mass_kg" and files.summary["shifts"][0]["status"] == "shifted"
    assert '<p class="shifted">Shifted: mass_kg</p>' in files.page
    rows = table_rows(files.page)
    assert rows[-1][0] == "production (version 4)" and rows[-1][1] == rows[1][1]
