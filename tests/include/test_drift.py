"""The shift of the training data against production's, on the real sample moved in known ways."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from co2 import drift
from co2_model import columns as col


def by_feature(found: list[drift.FeatureShift]) -> dict[str, drift.FeatureShift]:
    return {s.feature: s for s in found}


def test_the_same_data_has_not_shifted(processed_sample: dict[str, Any]) -> None:
    train = processed_sample["train"]
    reference = json.loads(json.dumps(drift.profile(train)))  # as stored with a run and read back
    found = drift.shifts(reference, train)
    assert {s.feature for s in found} == {*col.NUMERIC_FEATURES, col.TARGET, col.FUEL_TYPE, "fuel_mode"}
    assert all(s.psi == 0 and s.status == "stable" for s in found)


def test_heavier_cars_shift_mass_alone_and_come_first(processed_sample: dict[str, Any]) -> None:
    train = processed_sample["train"]
    reference = drift.profile(train)
    slightly = by_feature(drift.shifts(reference, train.assign(mass_kg=train["mass_kg"] * 1.02)))
    heavier = drift.shifts(reference, train.assign(mass_kg=train["mass_kg"] * 1.3))
    assert heavier[0].feature == "mass_kg" and heavier[0].status == "shifted" and heavier[0].unit == "kg"
    assert slightly["mass_kg"].psi < heavier[0].psi
    assert all(s.psi == 0 for s in heavier[1:])


def test_more_electric_cars_shift_the_fuel_mix_by_their_share(processed_sample: dict[str, Any]) -> None:
    train = processed_sample["train"]
    reference = drift.profile(train)
    petrol = train.index[train[col.FUEL_TYPE] == "petrol"]
    now = train.copy()
    now.loc[petrol[::2], col.FUEL_TYPE] = "electric"  # every other petrol configuration becomes electric
    found = by_feature(drift.shifts(reference, now))
    assert found[col.FUEL_TYPE].status != "stable"
    mix = drift.mix_change(reference, now).set_index(col.FUEL_TYPE)
    weights = now[col.REGISTRATIONS]
    moved = 100 * weights[petrol[::2]].sum() / weights.sum()
    assert np.isclose(mix.loc["electric", "change_points"], moved)
    assert np.isclose(mix.loc["petrol", "change_points"], -moved)
    assert np.isclose(mix["now_pct"].sum(), 100) and np.isclose(mix["production_pct"].sum(), 100)


def test_inputs_missing_more_often_count_as_a_shift(processed_sample: dict[str, Any]) -> None:
    train = processed_sample["train"]
    reference = drift.profile(train)
    now = train.assign(
        fuel_consumption_l_100km=np.where(train.index % 2 == 0, np.nan, train["fuel_consumption_l_100km"])
    )
    assert by_feature(drift.shifts(reference, now))["fuel_consumption_l_100km"].psi > drift.PSI_MODERATE


def test_a_reference_with_an_input_never_given_does_not_break_the_comparison(processed_sample: dict[str, Any]) -> None:
    train = processed_sample["train"].assign(wheelbase_mm=np.nan)
    reference = drift.profile(train)
    assert reference["numeric"]["wheelbase_mm"]["edges"] == []
    given = train.assign(wheelbase_mm=2_600.0)
    assert by_feature(drift.shifts(reference, given))["wheelbase_mm"].status == "shifted"
    assert by_feature(drift.shifts(reference, pd.DataFrame(train)))["wheelbase_mm"].psi == 0
