"""Validation: the real sample passes; each kind of breakage fails with its check named."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from co2.files import read_json
from co2.pipeline.validate import DataValidationError, check_frame, validate


@pytest.fixture
def raw(sample_frame: pd.DataFrame) -> pd.DataFrame:
    """The sample as the download writes it: discodata names, `n`, typed."""
    columns = [
        "Year",
        "MS",
        "Mk",
        "Ft",
        "Fm",
        "M (kg)",
        "Ec (cm3)",
        "Ep (KW)",
        "Erwltp (g/km)",
        "Fc",
        "Ewltp (g/km)",
        "Mt",
    ]
    frame = sample_frame[sample_frame["Ewltp (g/km)"].notna()][columns].copy()
    frame["n"] = 1
    for name in ("MS", "Mk", "Ft", "Fm"):
        frame[name] = frame[name].astype("string")
    return frame.reset_index(drop=True)


def write(frame: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "snap" / "snapshot.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def failing(frame: pd.DataFrame, **kwargs: float) -> dict[str, object]:
    checks = check_frame(frame, min_rows=int(kwargs.get("min_rows", 100)), max_out_of_range_fraction=0.001)
    return {c.name: c.observed for c in checks if not c.passed}


def test_real_sample_passes_and_writes_a_report(raw: pd.DataFrame, tmp_path: Path) -> None:
    result = validate(write(raw, tmp_path), tmp_path / "reports", min_rows=1000)
    report = read_json(Path(result.report_path))
    assert result.passed and report["passed"] and report["rows"] == len(raw)
    assert {c["name"] for c in report["checks"]} >= {"min_rows", "range[M (kg)]", "null_rate[Fc]", "allowed_values[Ft]"}


def test_renamed_column_is_named(raw: pd.DataFrame, tmp_path: Path) -> None:
    renamed = raw.rename(columns={"M (kg)": "Mass (kg)"})
    with pytest.raises(DataValidationError, match=r"column_present\[M \(kg\)\].*was it renamed") as info:
        validate(write(renamed, tmp_path), tmp_path / "reports", min_rows=1000)
    assert info.value.failures == 1
    assert read_json(Path(info.value.report_path))["passed"] is False


def test_out_of_range_values_are_counted(raw: pd.DataFrame) -> None:
    broken = raw.copy()
    broken.loc[:99, "M (kg)"] = -5.0
    failed = failing(broken)
    assert list(failed) == ["range[M (kg)]"]
    assert str(failed["range[M (kg)]"]).startswith("100 rows")


def test_a_few_typos_are_tolerated(raw: pd.DataFrame) -> None:
    one_typo = raw.copy()
    one_typo.loc[0, "Ep (KW)"] = 99_999.0
    assert failing(one_typo) == {}


def test_fuel_types_in_either_case_but_not_unknown_words(raw: pd.DataFrame) -> None:
    lower = raw.assign(Ft=raw["Ft"].str.lower())
    assert failing(lower) == {}
    odd = raw.copy()
    odd.loc[0, "Ft"] = "plutonium"
    assert failing(odd) == {"allowed_values[Ft]": "PLUTONIUM"}


def test_null_rate_and_types_and_row_count(raw: pd.DataFrame) -> None:
    nulls = raw.assign(**{"M (kg)": None})
    assert "null_rate[M (kg)]" in failing(nulls)
    as_text = raw.assign(**{"Ep (KW)": raw["Ep (KW)"].astype(str)})
    assert "dtype[Ep (KW)]" in failing(as_text)
    assert failing(raw.head(10)) == {"min_rows": 10}
