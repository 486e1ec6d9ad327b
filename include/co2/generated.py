"""Registration years generated from the real 2021 sample, for the local discodata server only.

Offline, the platform has one real year; a rolling window, a new release and a model that ages need
several. A generated year draws the sample's cars again (one row per registration, as the EEA
publishes) with the drift the EEA's own figures show from 2021 on, per year after the sample's:

- more battery-electric cars (+2.5 points of the registrations a year) and plug-in hybrids (+0.3);
- heavier cars (+1 % mass a year) with more power (+1.5 %);
- lower CO2 for the same kind of car: combustion cars burn 1 % less fuel a year (CO2 and fuel
  consumption move together, as the physics says), plug-ins go 4 % further on electricity;
- from 2025, fuel types in lower case (`petrol`), as the EEA's 2025 tables spell them.

Their tables say so in the metadata listing (a description starting with `GENERATED`), and a run
trained on them carries their names in its lineage. They are never used to judge a model's quality:
tests of quality use the real sample only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from co2.releases import GENERATED_MARKER

SAMPLE_YEAR = 2021
BEV_SHARE_GAIN_PER_YEAR = 0.025
PLUG_IN_SHARE_GAIN_PER_YEAR = 0.003
MASS_GAIN_PER_YEAR = 0.01
POWER_GAIN_PER_YEAR = 0.015
FUEL_SAVING_PER_YEAR = 0.01
ELECTRIC_RANGE_GAIN_PER_YEAR = 0.04
LOWER_CASE_FUEL_TYPES_FROM = 2025
LATE_REGISTRATIONS_SHARE = 0.03  # a final table counts the provisional one's cars and some more

DESCRIPTION = (
    f"{GENERATED_MARKER} by co2 from the real {SAMPLE_YEAR} sample with documented drift (co2.generated): not EEA data"
)


def eea_table(year: int, final: bool) -> str:
    """The name the EEA gives a year's table, by its numbering so far (2021 Pv23/Fv24 ... 2025 Pv31)."""
    version = 23 + 2 * (year - SAMPLE_YEAR) + int(final)
    return f"co2cars_{year}{'F' if final else 'P'}v{version}"


def _kind(rows: pd.DataFrame) -> pd.Series:
    fuel = rows["Ft"].astype("string").str.upper()
    electric = fuel.isin(["ELECTRIC", "HYDROGEN"])
    plug_in = rows["Fm"].astype("string").str.upper().eq("P") & ~electric
    return pd.Series(np.select([electric, plug_in], ["electric", "plug_in"], "combustion"), index=rows.index)


def generate_year(sample: pd.DataFrame, year: int, *, final: bool = False, seed: int = 0) -> pd.DataFrame:
    """As many registrations as the sample, for `year`, drawn from it with the drift above."""
    if year <= SAMPLE_YEAR:
        raise ValueError(f"years are generated after the sample's ({SAMPLE_YEAR}), not for {year}")
    rng = np.random.default_rng([seed, year])
    years = year - SAMPLE_YEAR
    kinds = _kind(sample)
    shares = kinds.value_counts(normalize=True)
    target = {
        "electric": shares.get("electric", 0.0) + BEV_SHARE_GAIN_PER_YEAR * years,
        "plug_in": shares.get("plug_in", 0.0) + PLUG_IN_SHARE_GAIN_PER_YEAR * years,
    }
    target["combustion"] = 1.0 - target["electric"] - target["plug_in"]
    picked = [
        sample[kinds == kind].sample(round(len(sample) * share), replace=True, random_state=rng)
        for kind, share in target.items()
        if (kinds == kind).any() and share > 0
    ]
    rows = pd.concat(picked, ignore_index=True)
    kind = _kind(rows)
    combustion, plug_in = kind.eq("combustion"), kind.eq("plug_in")

    def scaled(column: str, factor: float, where: pd.Series | None = None, decimals: int = 0) -> None:
        if column in rows:
            values = pd.to_numeric(rows[column], errors="coerce")
            mask = np.ones(len(rows), bool) if where is None else where.to_numpy()
            rows[column] = np.where(mask, (values * factor).round(decimals), values)

    for column in ("M (kg)", "Mt"):
        scaled(column, (1 + MASS_GAIN_PER_YEAR) ** years)
    scaled("Ep (KW)", (1 + POWER_GAIN_PER_YEAR) ** years)
    fuel = (1 - FUEL_SAVING_PER_YEAR) ** years
    for column in ("Ewltp (g/km)", "Enedc (g/km)"):
        scaled(column, fuel, combustion)
    scaled("Fc", fuel, combustion, decimals=1)
    further = (1 + ELECTRIC_RANGE_GAIN_PER_YEAR) ** years
    scaled("Electric range (km)", further)
    for column in ("Ewltp (g/km)", "Enedc (g/km)"):
        scaled(column, 1 / further, plug_in)
    scaled("Fc", 1 / further, plug_in, decimals=1)

    if year >= LOWER_CASE_FUEL_TYPES_FROM:
        rows["Ft"] = rows["Ft"].astype("string").str.lower()
    rows["Year"] = year
    if "Status" in rows:
        rows["Status"] = "F" if final else "P"
    if "ID" in rows:
        rows["ID"] = np.arange(1, len(rows) + 1) + year * 10_000_000
    return rows


def finalised(provisional: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """The final table of a year: the provisional one's cars plus late registrations of the same kinds."""
    rng = np.random.default_rng([seed, 1])
    late = provisional.sample(round(len(provisional) * LATE_REGISTRATIONS_SHARE), random_state=rng)
    rows = pd.concat([provisional, late], ignore_index=True)
    if "Status" in rows:
        rows["Status"] = "F"
    if "ID" in rows:
        start = int(pd.to_numeric(provisional["ID"], errors="coerce").max() or 0) + 1
        rows.loc[len(provisional) :, "ID"] = np.arange(start, start + len(late))
    return rows
