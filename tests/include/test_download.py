"""Download: server-side aggregation, paging, lineage metadata, immutable snapshots."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from co2.discodata import DiscodataQueryError
from co2.files import read_json, sha256_file
from co2.pipeline.download import download
from co2.settings import Settings


def test_one_row_per_configuration_with_registrations(
    settings: Settings, emulator_url: str, sample_frame: pd.DataFrame
) -> None:
    settings = settings.model_copy(update={"discodata_url": emulator_url, "page_size": 700})
    result = download(settings, {2021: settings.table_for(2021)})
    raw = pd.read_parquet(result.snapshot_path)
    with_target = sample_frame[sample_frame["Ewltp (g/km)"].notna()]
    assert result.registrations == len(with_target) == raw["n"].sum()
    assert result.rows == len(raw) < len(with_target)  # identical cars were grouped
    assert set(raw["Year"]) == {2021}
    assert {"M (kg)", "Ewltp (g/km)", "Fc", "Z (Wh/km)", "Electric range (km)"} <= set(raw.columns)
    assert not raw.duplicated(subset=[c for c in raw.columns if c != "n"]).any()


def test_metadata_records_the_lineage(settings: Settings, emulator_url: str) -> None:
    settings = settings.model_copy(update={"discodata_url": emulator_url})
    result = download(settings, {2021: settings.table_for(2021)})
    meta = read_json(Path(result.metadata_path))
    assert meta["sha256"] == sha256_file(Path(result.snapshot_path)) == result.sha256
    assert meta["source_url"] == emulator_url
    assert meta["years"] == [2021] and meta["tables"] == {"2021": "co2cars_2021Fv24"}
    assert "GROUP BY" in meta["queries"]["2021"] and "COUNT(*) AS n" in meta["queries"]["2021"]
    assert meta["rows"] == result.rows and meta["registrations"] == result.registrations


def test_snapshots_are_never_overwritten(settings: Settings, emulator_url: str) -> None:
    settings = settings.model_copy(update={"discodata_url": emulator_url})
    first = download(settings, {2021: settings.table_for(2021)})
    before = Path(first.snapshot_path).read_bytes()
    second = download(settings, {2021: settings.table_for(2021)})
    assert first.snapshot_path != second.snapshot_path
    assert Path(first.snapshot_path).read_bytes() == before
    assert not os.access(first.snapshot_path, os.W_OK) or os.geteuid() == 0
    assert Path(first.snapshot_path).stat().st_mode & 0o222 == 0  # read-only


def test_unknown_year_names_the_setting(settings: Settings) -> None:
    with pytest.raises(ValueError, match="CO2_EEA_TABLES"):
        settings.table_for(1999)


def test_unpublished_table_fails_clearly(settings: Settings, emulator_url: str) -> None:
    settings = settings.model_copy(update={"discodata_url": emulator_url, "eea_tables": {2022: "co2cars_2022Pv25"}})
    with pytest.raises(DiscodataQueryError, match="Invalid object name 'co2cars_2022Pv25'"):
        download(settings, {2022: "co2cars_2022Pv25"})
    assert not (settings.raw_dir).exists() or not any(settings.raw_dir.iterdir())
