"""The real 2021 sample as the processed splits every step after `preprocess` reads, made without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from co2.files import read_json
from co2.pipeline.preprocess import preprocess
from co2_model import columns as col


@pytest.fixture(scope="session")
def processed_sample(sample_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Train, test and lineage of the sample, as if downloaded one registration per row (cars with a WLTP CO2,
    as the download asks for)."""
    raw_dir = tmp_path_factory.mktemp("raw") / "sample"
    raw_dir.mkdir()
    present = [name for name in col.SOURCE_TO_DOMAIN if name in sample_frame.columns]
    cars = sample_frame[sample_frame["Ewltp (g/km)"].notna()]
    cars[present].assign(**{col.COUNT_ALIAS: 1, "Year": 2021}).to_parquet(raw_dir / "snapshot.parquet")
    result = preprocess(
        raw_dir / "snapshot.parquet", tmp_path_factory.mktemp("processed"), test_fraction=0.2, split_salt="co2"
    )
    return {
        "train": pd.read_parquet(result.train_path),
        "test": pd.read_parquet(result.test_path),
        "lineage": read_json(Path(result.lineage_path)),
    }
