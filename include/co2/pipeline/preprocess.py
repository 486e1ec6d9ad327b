"""Step 3: from a validated raw snapshot to train and test splits that every candidate shares.

- names: discodata columns become the project's names with units;
- vocabulary: fuel types in one case, one spelling per make;
- zero-emission cars (battery-electric, hydrogen) keep WLTP CO2 = 0 and stay in the test split
  (they are cars the model is judged on), but the model answers them by rule, not by regression;
- impossible values are removed (each rule counted in the lineage);
- fuel consumption reported on another basis than WLTP (some member states report figures
  ~20 % below what WLTP CO2 implies) is not trusted: it becomes missing, as it may be at
  prediction time;
- the split hashes each configuration, so identical cars are never on both sides, and the same
  configuration lands on the same side in every run: the production model was never trained on
  the configurations of today's test split, which keeps champion/challenger comparisons fair.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from co2.files import new_directory, read_json, sha256_file, utc_stamp, write_json, write_parquet
from co2.logs import get_logger
from co2.pipeline.results import PreprocessResult
from co2.pipeline.validate import OPTIONAL_RULES, SCHEMA
from co2_model import columns as col
from co2_model.model import FUEL_BURNING_MODES, MAX_CHARGE_SUSTAINING_CO2_G_KM, utility_factor
from co2_model.vocabulary import (
    CO2_PER_FUEL_LITRE_G_KM,
    ZERO_EMISSION_FUEL_TYPES,
    normalise_fuel_types,
    normalise_makes,
)

log = get_logger("co2.preprocess")

# A member state's fuel consumption figures are trusted when their median CO2 per litre is
# within this share of the fuel's WLTP factor (judged on the training split, >= MIN_ROWS rows).
FC_CONSISTENCY_TOLERANCE = 0.06
FC_CONSISTENCY_MIN_ROWS = 5


def to_domain(raw: pd.DataFrame) -> pd.DataFrame:
    """Rename to domain columns, add the absent optional ones, normalise the vocabulary."""
    frame = raw.rename(columns={**col.SOURCE_TO_DOMAIN, col.COUNT_ALIAS: col.REGISTRATIONS, "Year": col.YEAR})
    for name in col.NUMERIC_FEATURES:
        if name not in frame.columns:
            frame[name] = np.nan
    frame[col.FUEL_TYPE] = normalise_fuel_types(frame[col.FUEL_TYPE])
    frame["fuel_mode"] = frame["fuel_mode"].astype("string").str.strip().str.upper()
    frame[col.MAKE] = normalise_makes(frame[col.MAKE])
    keep = [col.YEAR, col.MEMBER_STATE, *col.MODEL_INPUT_COLUMNS, col.TARGET, col.REGISTRATIONS]
    return frame[keep]


def impossible_rows(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """Named masks of rows that cannot be real cars: the schema's physical limits, plus
    combustion cars with zero CO2 and zero-emission cars with some."""
    masks: dict[str, pd.Series] = {}
    for rule in (*SCHEMA, *OPTIONAL_RULES):
        name = col.SOURCE_TO_DOMAIN.get(rule.name)
        if name is None or name not in frame.columns:
            continue
        values = frame[name]
        outside = pd.Series(False, index=frame.index)
        if rule.minimum is not None:
            outside |= values < rule.minimum
        if rule.maximum is not None:
            outside |= values > rule.maximum
        masks[f"out_of_range[{name}]"] = outside.fillna(False).astype(bool)
    zero_emission = frame[col.FUEL_TYPE].isin(ZERO_EMISSION_FUEL_TYPES).fillna(False).astype(bool)
    masks["combustion_with_zero_co2"] = ~zero_emission & (frame[col.TARGET] <= 0)
    masks["zero_emission_with_co2"] = zero_emission & (frame[col.TARGET] > 0)
    masks["unknown_fuel_type"] = frame[col.FUEL_TYPE].isin({"unknown"}).fillna(True).astype(bool)
    masks["non_positive_registrations"] = frame[col.REGISTRATIONS] <= 0
    # A plug-in's weighted WLTP CO2 is at most its fuel share times what the thirstiest cars emit:
    # above that, the row carries a charge-sustaining figure or a wrong range.
    range_km = frame["electric_range_km"]
    fuel_share = 1.0 - utility_factor(range_km.fillna(0.0))
    above = frame[col.TARGET].to_numpy() > fuel_share * MAX_CHARGE_SUSTAINING_CO2_G_KM
    masks["plug_in_co2_above_its_fuel_share"] = pd.Series((range_km > 0).fillna(False).to_numpy() & above, frame.index)
    return masks


def configuration_bucket(frame: pd.DataFrame, salt: str) -> np.ndarray:
    """A stable number in [0, 1) per configuration of model inputs: equal inputs, equal number."""
    keys = frame[col.MODEL_INPUT_COLUMNS].copy()
    keys["__salt"] = salt
    hashed = pd.util.hash_pandas_object(keys, index=False, hash_key="co2-emissions-v1").to_numpy()
    return (hashed % np.uint64(1_000_003)).astype(np.float64) / 1_000_003.0


def untrusted_fuel_consumption_states(train: pd.DataFrame) -> dict[str, float]:
    """Member states whose fuel consumption does not match WLTP CO2 (median ratio to the fuel's
    factor), judged on plain combustion cars of the training split."""
    factor = train[col.FUEL_TYPE].map(CO2_PER_FUEL_LITRE_G_KM)
    usable = (
        train["fuel_consumption_l_100km"].gt(0)
        & train[col.FUEL_TYPE].isin(["petrol", "diesel"])
        & train["fuel_mode"].isin(list(FUEL_BURNING_MODES))
        & train[col.TARGET].gt(0)
    )
    ratio = (train[col.TARGET] / (factor * train["fuel_consumption_l_100km"]))[usable]
    by_state = ratio.groupby(train.loc[usable, col.MEMBER_STATE]).agg(["median", "count"])
    off = by_state[
        (by_state["count"] >= FC_CONSISTENCY_MIN_ROWS) & ((by_state["median"] - 1).abs() > FC_CONSISTENCY_TOLERANCE)
    ]
    return {str(state): round(float(median), 3) for state, median in off["median"].items()}


def blank_fuel_consumption(split: pd.DataFrame, states: dict[str, float]) -> pd.DataFrame:
    split = split.copy()
    split.loc[split[col.MEMBER_STATE].isin(list(states)), "fuel_consumption_l_100km"] = np.nan
    return split


def aggregate(split: pd.DataFrame, keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per distinct (inputs, CO2), registrations summed: what the models learn from.

    Member states and years have done their work (the consistency rule) and are not model inputs;
    `keep` keeps them apart where errors are reported by them or the backtest needs them.
    """
    keys = [*col.MODEL_INPUT_COLUMNS, col.TARGET, *keep]
    grouped = split.groupby(keys, dropna=False, sort=True, observed=True)[col.REGISTRATIONS].sum()
    return grouped.reset_index()


# Makes listed by name in the lineage's registration counts; the rest are summed as "other".
TOP_MAKES = 15


def registrations_by(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Registrations per year, member state, fuel type and make (the biggest makes): what the run report
    shows of the data, counted here where every cleaned row is at hand."""
    counts: dict[str, dict[str, int]] = {}
    for by in (col.YEAR, col.MEMBER_STATE, col.FUEL_TYPE, col.MAKE):
        sums = frame.groupby(frame[by].astype("string").fillna("missing"))[col.REGISTRATIONS].sum()
        sums = sums.sort_values(ascending=False, kind="stable")
        if by == col.MAKE and len(sums) > TOP_MAKES:
            sums = pd.concat([sums.head(TOP_MAKES), pd.Series({"other": sums.iloc[TOP_MAKES:].sum()})])
        counts[by] = {str(key): int(value) for key, value in sums.items()}
    return counts


def preprocess(snapshot_path: Path, processed_root: Path, *, test_fraction: float, split_salt: str) -> PreprocessResult:
    """Clean, split and write the processed splits with their lineage."""
    raw = pd.read_parquet(snapshot_path)
    frame = to_domain(raw)
    rows_in, registrations_in = len(frame), int(frame[col.REGISTRATIONS].sum())

    masks = impossible_rows(frame)
    removed = pd.Series(False, index=frame.index)
    removed_by_rule: dict[str, int] = {}
    for rule, mask in masks.items():
        removed_by_rule[rule] = int((mask & ~removed).sum())
        removed |= mask
    registrations_removed = int(frame.loc[removed, col.REGISTRATIONS].sum())
    frame = frame[~removed].reset_index(drop=True)

    is_test = configuration_bucket(frame, split_salt) < test_fraction
    train, test = frame[~is_test].reset_index(drop=True), frame[is_test].reset_index(drop=True)

    untrusted = untrusted_fuel_consumption_states(train)
    # Years stay apart in both splits: errors are reported per year, and the backtest trains on the
    # older years alone (training adds the years of a configuration up: co2.pipeline.train).
    train = aggregate(blank_fuel_consumption(train, untrusted), keep=(col.YEAR,))
    test = aggregate(blank_fuel_consumption(test, untrusted), keep=(col.MEMBER_STATE, col.YEAR))

    out_dir = new_directory(processed_root, f"{utc_stamp()}_{Path(snapshot_path).parent.name}")
    train_path, test_path = out_dir / "train.parquet", out_dir / "test.parquet"
    train_sha, test_sha = write_parquet(train, train_path), write_parquet(test, test_path)

    raw_metadata_path = Path(snapshot_path).parent / "metadata.json"
    raw_metadata = read_json(raw_metadata_path) if raw_metadata_path.exists() else {}
    lineage = {
        "kind": "processed_splits",
        "created_at": datetime.now(UTC).isoformat(),
        "raw_snapshot": str(snapshot_path),
        "raw_sha256": sha256_file(Path(snapshot_path)),
        "raw_metadata": raw_metadata,
        "years": sorted(int(y) for y in frame[col.YEAR].unique()),
        "rows_in": rows_in,
        "registrations_in": registrations_in,
        "removed_by_rule": removed_by_rule,
        "registrations_by": registrations_by(frame),
        "registrations_removed": registrations_removed,
        "untrusted_fuel_consumption_states": untrusted,
        "split": {"method": "configuration hash", "salt": split_salt, "test_fraction": test_fraction},
        "train": {
            "path": str(train_path),
            "sha256": train_sha,
            "rows": len(train),
            "registrations": int(train[col.REGISTRATIONS].sum()),
        },
        "test": {
            "path": str(test_path),
            "sha256": test_sha,
            "rows": len(test),
            "registrations": int(test[col.REGISTRATIONS].sum()),
        },
    }
    lineage_path = out_dir / "lineage.json"
    write_json(lineage, lineage_path)
    log.info(
        "preprocess_finished",
        rows_in=rows_in,
        removed=int(removed.sum()),
        train_rows=len(train),
        test_rows=len(test),
        untrusted_fc_states=",".join(untrusted) or "none",
        lineage=str(lineage_path),
    )
    return PreprocessResult(
        str(train_path),
        str(test_path),
        str(lineage_path),
        len(train),
        len(test),
        int(train[col.REGISTRATIONS].sum()),
        int(test[col.REGISTRATIONS].sum()),
    )
