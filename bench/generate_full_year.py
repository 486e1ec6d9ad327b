"""Grow the real 2021 sample into realistic full years for the local discodata server.

Per year, about 100k distinct configurations (the real sample's cars, varied in mass, power, engine,
fuel consumption and member state, CO2 moved consistently with the physics) registered about
10 M times in all (a heavy-tailed count per configuration, as in the real data), written as one
row per registration into a SQLite database that `co2 discodata-emulator --db` serves. Years after
2021 start from the sample drifted as co2.generated documents (more electric cars, heavier, less CO2).

    python bench/generate_full_year.py --out bench/out/window.sqlite --years 2022 2023 2024
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR / "include"))

from co2.emulator import index_for_download  # noqa: E402
from co2.generated import SAMPLE_YEAR, eea_table, generate_year  # noqa: E402

SAMPLE_CSV = PROJECT_DIR / "data" / "sample" / "co2cars_2021_sample.csv"
COLUMNS = [
    "Year",
    "Status",
    "MS",
    "Mk",
    "Cn",
    "Ft",
    "Fm",
    "M (kg)",
    "Mt",
    "Ec (cm3)",
    "Ep (KW)",
    "Erwltp (g/km)",
    "Fc",
    "Z (Wh/km)",
    "Electric range (km)",
    "W (mm)",
    "At1 (mm)",
    "Ewltp (g/km)",
]
# Member states that publish no fuel consumption in 2021 (as in the real data).
NO_FC_STATES = ["AT", "CY", "DK", "FI", "GR", "HU", "IS", "LT", "LU", "MT", "NL", "PT", "RO", "SE", "SK"]


def configurations(sample: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    """`count` plausible configurations derived from the real cars."""
    rng = np.random.default_rng(seed)
    base = sample[sample["Ewltp (g/km)"].notna()].reset_index(drop=True)
    picked = base.iloc[rng.integers(0, len(base), count)].reset_index(drop=True)
    out = picked[COLUMNS].copy()
    mass_factor = rng.uniform(0.92, 1.08, count)
    out["M (kg)"] = (picked["M (kg)"] * mass_factor).round()
    out["Mt"] = (picked["Mt"] * mass_factor).round()
    power_factor = rng.choice([0.8, 0.9, 1.0, 1.0, 1.1, 1.25], count)
    out["Ep (KW)"] = (picked["Ep (KW)"] * power_factor).round()
    fc_factor = rng.uniform(0.94, 1.06, count)
    out["Fc"] = (picked["Fc"] * fc_factor).round(1)
    combustion = ~picked["Ft"].str.upper().isin(["ELECTRIC", "HYDROGEN"])
    # CO2 follows fuel burnt: mass and power raise it, as fuel consumption does
    co2_factor = np.where(picked["Fc"].notna(), out["Fc"] / picked["Fc"], mass_factor**0.6 * power_factor**0.15)
    out["Ewltp (g/km)"] = np.where(combustion, (picked["Ewltp (g/km)"] * co2_factor).round(), 0.0)
    out["W (mm)"] = picked["W (mm)"] + rng.integers(-30, 31, count)
    out["Electric range (km)"] = (picked["Electric range (km)"] * rng.uniform(0.9, 1.1, count)).round()
    states = sample["MS"].unique()
    out["MS"] = rng.choice(states, count)
    out.loc[out["MS"].isin(NO_FC_STATES), "Fc"] = np.nan
    return out.drop_duplicates().reset_index(drop=True)


def registrations(count: int, total: int, seed: int) -> np.ndarray:
    """Heavy-tailed registrations per configuration summing to about `total`, each at least 1."""
    rng = np.random.default_rng(seed + 1)
    weights = rng.lognormal(mean=0.0, sigma=1.6, size=count)
    return np.maximum(1, np.round(weights / weights.sum() * total)).astype(np.int64)


def write_table(configs: pd.DataFrame, counts: np.ndarray, db_path: Path, table: str) -> int:
    """One row per registration, expanded inside SQLite from (configuration, count), and indexed for
    the download's aggregation as the local server indexes the tables it writes."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    configs.assign(__n=counts).to_sql("__configurations", conn, index=False)
    listed = ", ".join(f"[{c}]" for c in COLUMNS)
    conn.execute(f"CREATE TABLE [{table}] AS SELECT {listed} FROM __configurations WHERE 0")
    conn.execute(
        "WITH RECURSIVE copy(i) AS "
        "(SELECT 1 UNION ALL SELECT i + 1 FROM copy WHERE i < (SELECT MAX(__n) FROM __configurations)) "
        f"INSERT INTO [{table}] SELECT {listed} FROM __configurations JOIN copy ON copy.i <= __configurations.__n"
    )
    conn.execute("DROP TABLE __configurations")
    index_for_download(conn, table)
    conn.commit()
    rows = int(conn.execute(f"SELECT COUNT(*) FROM [{table}]").fetchone()[0])
    conn.execute("VACUUM")
    conn.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "bench" / "out" / "window.sqlite")
    parser.add_argument("--configurations", type=int, default=110_000)
    parser.add_argument("--registrations", type=int, default=10_000_000)
    parser.add_argument("--years", type=int, nargs="+", default=[2021], help="one table each, the newest provisional")
    parser.add_argument("--seed", type=int, default=2021)
    args = parser.parse_args(argv)
    sample = pd.read_csv(SAMPLE_CSV, low_memory=False)
    args.out.unlink(missing_ok=True)
    for year in sorted(args.years):
        started = time.perf_counter()
        table = eea_table(year, final=year != max(args.years))
        drifted = sample if year <= SAMPLE_YEAR else generate_year(sample, year, seed=args.seed)
        configs = configurations(drifted, args.configurations, args.seed + year)
        counts = registrations(len(configs), args.registrations, args.seed + year)
        rows = write_table(configs, counts, args.out, table)
        print(
            f"wrote {rows:,} registrations of {len(configs):,} configurations to {table} in {args.out} "
            f"({args.out.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
