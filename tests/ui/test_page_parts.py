"""The prediction page's pure parts, without a service: where a car sits, and problems in words."""

from __future__ import annotations

from typing import Any

import pytest

from co2_model.model import METHODS
from co2_model.vocabulary import FUEL_MODES
from ui.distribution import histogram, position, share_above, share_below
from ui.wording import METHODS as METHODS_IN_WORDS
from ui.wording import explain

EVEN = [float(p) for p in range(101)]  # CO2 spread evenly from 0 to 100 g/km


@pytest.mark.parametrize(("co2", "below", "above"), [(-5, 0, 100), (0, 0, 100), (25.5, 25.5, 74.5), (100, 100, 0)])
def test_shares_below_and_above_follow_the_percentiles(co2: float, below: float, above: float) -> None:
    assert share_below(EVEN, co2) == pytest.approx(below)
    assert share_above(EVEN, co2) == pytest.approx(above)


def test_a_fuel_type_that_all_emits_the_same_is_neither_below_nor_above() -> None:
    electric = [0.0] * 101
    assert (share_below(electric, 0.0), share_above(electric, 0.0)) == (0.0, 0.0)
    sentence = position("electric", {"registrations": 1200, "percentiles_g_km": electric}, 0.0, "2021–2023")
    assert sentence == (
        "Among the 1,200 electric cars registered in 2021–2023 that the model was trained on, "
        "0 % emit less than this car, 0 % more and 100 % as much."
    )
    assert histogram(electric)["share_pct"].sum() == pytest.approx(100)


def test_the_histogram_holds_every_registration_in_round_bars() -> None:
    skewed = [100 + (p / 100) ** 3 * 300 for p in range(101)]  # a long tail of heavy emitters
    bars = histogram(skewed)
    assert bars["share_pct"].sum() == pytest.approx(100)
    assert (bars["share_pct"] >= 0).all() and len(bars) <= 41
    widths = (bars["to_g_km"] - bars["from_g_km"]).unique()
    assert len(widths) == 1 and widths[0] == 10  # 300 g/km in about forty bars
    assert bars["share_pct"].iloc[0] > bars["share_pct"].iloc[-1]  # most cars emit little


def test_every_method_has_its_words() -> None:
    assert set(METHODS_IN_WORDS) == set(METHODS)


@pytest.mark.parametrize(
    ("error", "values", "names", "sentence"),
    [
        (
            {
                "loc": ["cars", 2, "mass_kg"],
                "msg": "Input should be greater than or equal to 300",
                "type": "greater_than_equal",
            },
            {"mass_kg": "50"},
            {"mass_kg": "M (kg)"},
            "row 3: M (kg) 50 is below the minimum 300 kg",
        ),
        (
            {
                "loc": ["body", "engine_power_kw"],
                "msg": "Input should be less than or equal to 1500",
                "type": "less_than_equal",
            },
            {"engine_power_kw": 2000.0},
            None,
            "engine_power_kw 2000 is above the maximum 1500 kW",
        ),
        (
            {"loc": ["cars", 0, "fuel_type"], "msg": "Input should be a valid string", "type": "string_type"},
            {"fuel_type": ""},
            {"fuel_type": "Ft"},
            "row 1: Ft is missing: every car needs it",
        ),
        (
            {"loc": ["cars", 4, "fuel_mode"], "msg": "String should match pattern", "type": "string_pattern_mismatch"},
            {"fuel_mode": "X"},
            None,
            "row 5: fuel_mode X is not an EEA fuel mode; use one of "
            + ", ".join(f"{mode} ({meaning})" for mode, meaning in FUEL_MODES.items()),
        ),
        (
            {"loc": ["cars", 1, "mass_kg"], "msg": "Input should be a valid number", "type": "float_parsing"},
            {"mass_kg": "heavy"},
            None,
            "row 2: mass_kg heavy is not a number",
        ),
        (
            {"loc": ["body", "file"], "msg": "missing column(s) fuel_type", "type": "value_error"},
            None,
            None,
            "missing column(s) fuel_type",
        ),
    ],
)
def test_problems_in_plain_words(
    error: dict[str, Any], values: dict[str, Any] | None, names: dict[str, str] | None, sentence: str
) -> None:
    assert explain(error, values, names) == sentence


def test_the_model_view_shows_only_the_reports_own_png_figures_in_reading_order() -> None:
    from ui.report import shown_figures

    summary = {
        "winner": "random_forest_with_make",
        "figures": [
            "data.png",
            "candidate_knn.png",
            "candidate_random_forest_with_make.png",
            "candidates.png",
            "../../etc/passwd.png",  # never fetched: not a name the report writes
            "report.html",
        ],
    }
    assert [name for name, _ in shown_figures(summary)] == [
        "candidates.png",
        "candidate_random_forest_with_make.png",
        "data.png",
    ]
    assert [name for name, _ in shown_figures({**summary, "figures": [*summary["figures"], "drift.png"]})][-1] == (
        "drift.png"
    )
    assert shown_figures({}) == []
