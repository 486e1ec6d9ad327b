"""Preprocessing on the real sample: vocabulary, zero-emission cars, impossible values, a leak-free split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from co2.files import read_json
from co2.pipeline.download import download
from co2.pipeline.preprocess import configuration_bucket, preprocess, to_domain
from co2.settings import Settings
from co2_model import columns as col
from co2_model.vocabulary import FUEL_TYPES, normalise_make


@pytest.mark.parametrize(
    ("spelling", "make"),
    [
        ("VOLKSWAGEN, VW", "VOLKSWAGEN"),
        ("VOLKSWAGEN  VW", "VOLKSWAGEN"),
        ("VOLKSWAGEN. VW", "VOLKSWAGEN"),
        ("VW", "VOLKSWAGEN"),
        ("Volkswagen", "VOLKSWAGEN"),
        ("ŠKODA", "SKODA"),
        ("?KODA", "SKODA"),
        ("Skoda", "SKODA"),
        ("MERCEDES BENZ", "MERCEDES-BENZ"),
        ("Mercedes-Benz", "MERCEDES-BENZ"),
        ("BMW I", "BMW"),
        ("DS AUTOMOBILES", "DS"),
        ("  ", None),
    ],
)
def test_make_spellings(spelling: str, make: str | None) -> None:
    assert normalise_make(spelling) == make


@pytest.fixture
def processed(settings: Settings, emulator_url: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    settings = settings.model_copy(update={"discodata_url": emulator_url})
    snapshot = download(settings, {2021: settings.table_for(2021)})
    result = preprocess(Path(snapshot.snapshot_path), settings.processed_dir, test_fraction=0.2, split_salt="co2")
    return pd.read_parquet(result.train_path), pd.read_parquet(result.test_path), read_json(Path(result.lineage_path))


def test_vocabulary_is_normalised(processed: tuple[pd.DataFrame, pd.DataFrame, dict]) -> None:
    both = pd.concat(processed[:2])
    assert set(both[col.FUEL_TYPE]) <= set(FUEL_TYPES) - {"unknown"}
    assert {"petrol", "diesel", "petrol/electric", "electric"} <= set(both[col.FUEL_TYPE])
    makes = set(both[col.MAKE])
    assert "VOLKSWAGEN" in makes and "SKODA" in makes
    assert not makes & {"VW", "VOLKSWAGEN, VW", "ŠKODA", "Skoda", "Hyundai", "MERCEDES BENZ"}


def test_zero_emission_cars_are_kept_with_zero_co2(processed: tuple[pd.DataFrame, pd.DataFrame, dict]) -> None:
    train, test, _ = processed
    electric = test[test[col.FUEL_TYPE] == "electric"]
    assert len(electric) > 20  # judged on them too
    assert (electric[col.TARGET] == 0).all()
    combustion = pd.concat([train, test]).query("fuel_type not in ['electric', 'hydrogen']")
    assert (combustion[col.TARGET] > 0).all()


def test_no_configuration_on_both_sides(processed: tuple[pd.DataFrame, pd.DataFrame, dict]) -> None:
    train, test, lineage = processed
    # compare on the inputs before untrusted fuel consumption was blanked: use the raw snapshot
    raw = to_domain(pd.read_parquet(lineage["raw_snapshot"]))
    keys = pd.util.hash_pandas_object(raw[col.MODEL_INPUT_COLUMNS], index=False)
    bucket = configuration_bucket(raw, "co2")
    sides = pd.DataFrame({"key": keys, "test": bucket < 0.2}).groupby("key")["test"].nunique()
    assert (sides == 1).all()
    assert 0.15 < len(test) / (len(train) + len(test)) < 0.25
    assert lineage["train"]["rows"] == len(train) and lineage["test"]["rows"] == len(test)


def test_split_is_stable_and_salted(processed: tuple[pd.DataFrame, pd.DataFrame, dict]) -> None:
    _, _, lineage = processed
    raw = to_domain(pd.read_parquet(lineage["raw_snapshot"]))
    assert np.array_equal(configuration_bucket(raw, "co2"), configuration_bucket(raw.copy(), "co2"))
    assert not np.array_equal(configuration_bucket(raw, "co2"), configuration_bucket(raw, "other"))


def test_untrusted_fuel_consumption_is_blanked(processed: tuple[pd.DataFrame, pd.DataFrame, dict]) -> None:
    train, test, lineage = processed
    untrusted = set(lineage["untrusted_fuel_consumption_states"])
    assert untrusted  # the 2021 sample has member states reporting Fc on another basis
    raw = to_domain(pd.read_parquet(lineage["raw_snapshot"]))
    from_untrusted = raw[raw[col.MEMBER_STATE].isin(untrusted) & raw["fuel_consumption_l_100km"].notna()]
    assert len(from_untrusted) > 50
    both = pd.concat([train, test])
    kept = both.loc[both["fuel_type"].isin(["petrol", "diesel"]) & both["fuel_mode"].eq("M")]
    ratio = (kept[col.TARGET] / kept["fuel_consumption_l_100km"]).dropna()
    # what stays is consistent with WLTP: ~22.7 g/km per l/100 km for petrol, ~26.3 for diesel
    assert ratio.between(21, 28.5).mean() > 0.97
    assert ratio.between(21, 28.5).sum() > 500


def test_splits_hold_one_row_per_configuration(processed: tuple[pd.DataFrame, pd.DataFrame, dict]) -> None:
    train, test, lineage = processed
    assert not train.duplicated(subset=[*col.MODEL_INPUT_COLUMNS, col.TARGET]).any()
    # the test split keeps member states apart: its errors are reported by member state
    assert not test.duplicated(subset=[*col.MODEL_INPUT_COLUMNS, col.TARGET, col.MEMBER_STATE]).any()
    kept = lineage["train"]["registrations"] + lineage["test"]["registrations"]
    assert kept + lineage["registrations_removed"] == lineage["registrations_in"]


def test_impossible_values_are_removed_and_counted(
    settings: Settings, sample_frame: pd.DataFrame, tmp_path: Path
) -> None:
    from tests.conftest import run_emulator

    broken = sample_frame.copy()
    petrol = broken.index[broken["Ft"] == "PETROL"][:3]
    broken.loc[petrol, "Ewltp (g/km)"] = 0.0  # a combustion car cannot emit nothing
    broken.loc[broken.index[broken["Ft"] == "DIESEL"][:2], "M (kg)"] = 50_000.0
    server = run_emulator(broken, settings)
    try:
        snapshot = download(settings.model_copy(update={"discodata_url": server.url}), {2021: settings.table_for(2021)})
    finally:
        server.shutdown()
    result = preprocess(Path(snapshot.snapshot_path), tmp_path / "processed", test_fraction=0.2, split_salt="co2")
    removed = read_json(Path(result.lineage_path))["removed_by_rule"]
    assert removed["combustion_with_zero_co2"] == 3
    assert removed["out_of_range[mass_kg]"] == 2
