"""The summary of a model's training cars that travels with it (co2.training_summary)."""

from __future__ import annotations

import pandas as pd
import pydantic
import pytest

from co2.training_summary import METADATA_KEY, PERCENTILES, TrainingSummary, from_metadata, summarise
from co2_model import columns as col


def cars(*rows: tuple[str, str, float, int]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[col.FUEL_TYPE, col.MAKE, col.TARGET, col.REGISTRATIONS])


def test_percentiles_are_weighted_by_registrations_per_fuel_type() -> None:
    summary = summarise(
        cars(
            ("petrol", "VOLKSWAGEN", 100.0, 300),
            ("petrol", "SKODA", 200.0, 100),
            ("diesel", "SKODA", 150.0, 10),
            ("electric", "TESLA", 0.0, 50),
        )
    )
    petrol = summary.co2_wltp_g_km_by_fuel_type["petrol"]
    assert petrol.registrations == 400 and len(petrol.percentiles_g_km) == len(PERCENTILES)
    # three registrations in four emit 100 g/km; each value stands at the middle of its weight (3/8, 7/8)
    assert petrol.percentiles_g_km[0] == 100.0 and petrol.percentiles_g_km[37] == 100.0
    assert petrol.percentiles_g_km[50] < 150 and petrol.percentiles_g_km[100] == 200.0
    assert set(summary.co2_wltp_g_km_by_fuel_type["electric"].percentiles_g_km) == {0.0}
    assert summary.makes == ["VOLKSWAGEN", "SKODA", "TESLA"]  # by registrations


def test_the_summary_survives_the_mlmodel_file_and_a_malformed_one_is_refused() -> None:
    summary = summarise(cars(("petrol", "VOLKSWAGEN", 120.0, 3)))
    assert from_metadata({METADATA_KEY: summary.model_dump()}) == summary
    assert from_metadata(None) is None and from_metadata({"other": 1}) is None
    falling = summary.model_dump()
    falling["co2_wltp_g_km_by_fuel_type"]["petrol"]["percentiles_g_km"][5] = -1.0
    with pytest.raises(pydantic.ValidationError):
        from_metadata({METADATA_KEY: falling})
    with pytest.raises(pydantic.ValidationError):  # bounded: a registry cannot make it large
        TrainingSummary.model_validate({"co2_wltp_g_km_by_fuel_type": {}, "makes": ["X"] * 10_000})
