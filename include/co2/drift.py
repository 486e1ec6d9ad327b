"""How the training data moved: a compact profile of a split, and its population stability index (PSI)
against the profile of production's training data.

A profile is small JSON (bin edges and registration shares per input), stored with each run's report,
so the next run compares itself with production without reading production's data again. Every share
counts a configuration as many times as it was registered, like the metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from co2_model import columns as col
from co2_model.inputs import MEASURED

# The conventional reading of PSI: below 0.1 stable, 0.1 to 0.25 a moderate shift worth watching,
# above 0.25 a shift that changes what the model sees.
PSI_MODERATE = 0.1
PSI_SHIFTED = 0.25
QUANTILE_BINS = 10
MISSING = "missing"
# An empty bin on one side would make PSI infinite: shares are floored at this.
_FLOOR = 1e-4
PROFILE_VERSION = 1
CATEGORICAL_PROFILED = (col.FUEL_TYPE, "fuel_mode")


@dataclass(frozen=True)
class FeatureShift:
    feature: str
    unit: str
    psi: float
    status: str  # "stable", "moderate" or "shifted"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status_of(psi: float) -> str:
    return "shifted" if psi > PSI_SHIFTED else "moderate" if psi > PSI_MODERATE else "stable"


def _numeric_shares(values: pd.Series, weights: np.ndarray, edges: list[float]) -> list[float]:
    """Registration shares in (-inf, e1], (e1, e2], ..., (ek, inf), then missing."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    present = ~np.isnan(numbers)
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), numbers[present], side="left")
    counts = np.bincount(bins, weights=weights[present], minlength=len(edges) + 1).tolist()
    total = float(weights.sum()) or 1.0
    return [c / total for c in counts] + [float(weights[~present].sum()) / total]


def _categorical_shares(values: pd.Series, weights: np.ndarray) -> dict[str, float]:
    keys = values.astype("string").fillna(MISSING).to_numpy()
    sums = pd.Series(weights).groupby(keys).sum()
    total = float(sums.sum()) or 1.0
    return {str(key): float(value) / total for key, value in sums.sort_values(ascending=False).items()}


def profile(frame: pd.DataFrame) -> dict[str, Any]:
    """Bin edges (weighted deciles of the values present) and shares per measured input and the target,
    and the shares of each fuel type and fuel mode."""
    weights = frame[col.REGISTRATIONS].to_numpy(dtype=np.float64)
    numeric: dict[str, Any] = {}
    for name in [*col.NUMERIC_FEATURES, col.TARGET]:
        if name not in frame.columns:
            continue
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        present = ~np.isnan(values)
        edges: list[float] = []
        if present.any():
            cuts = np.quantile(
                values[present],
                np.arange(1, QUANTILE_BINS) / QUANTILE_BINS,
                weights=weights[present],
                method="inverted_cdf",
            )
            edges = sorted({float(v) for v in cuts})
        numeric[name] = {"edges": edges, "shares": _numeric_shares(frame[name], weights, edges)}
    categorical = {name: _categorical_shares(frame[name], weights) for name in CATEGORICAL_PROFILED}
    return {
        "version": PROFILE_VERSION,
        "rows": len(frame),
        "registrations": int(weights.sum()),
        "numeric": numeric,
        "categorical": categorical,
    }


def psi(expected: list[float], actual: list[float]) -> float:
    e = np.maximum(np.asarray(expected, dtype=np.float64), _FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), _FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def shifts(reference: dict[str, Any], current: pd.DataFrame) -> list[FeatureShift]:
    """PSI of each input (and the target) of `current` against the reference profile, shifted first."""
    weights = current[col.REGISTRATIONS].to_numpy(dtype=np.float64)
    found: list[FeatureShift] = []
    for name, binned in reference.get("numeric", {}).items():
        if name not in current.columns:
            continue
        value = psi(binned["shares"], _numeric_shares(current[name], weights, binned["edges"]))
        unit = MEASURED[name].unit if name in MEASURED else "g/km"
        found.append(FeatureShift(name, unit, round(value, 4), status_of(value)))
    for name, shares in reference.get("categorical", {}).items():
        if name not in current.columns:
            continue
        now = _categorical_shares(current[name], weights)
        keys = sorted(set(shares) | set(now))
        value = psi([shares.get(k, 0.0) for k in keys], [now.get(k, 0.0) for k in keys])
        found.append(FeatureShift(name, "category", round(value, 4), status_of(value)))
    return sorted(found, key=lambda s: -s.psi)


def mix_change(reference: dict[str, Any], current: pd.DataFrame, by: str = col.FUEL_TYPE) -> pd.DataFrame:
    """Share of registrations per value of `by` (fuel type by default) in production's data and now, in %."""
    now = _categorical_shares(current[by], current[col.REGISTRATIONS].to_numpy(dtype=np.float64))
    before = reference.get("categorical", {}).get(by, {})
    keys = sorted(set(before) | set(now), key=lambda k: -max(before.get(k, 0.0), now.get(k, 0.0)))
    return pd.DataFrame(
        {
            by: keys,
            "production_pct": [100.0 * before.get(k, 0.0) for k in keys],
            "now_pct": [100.0 * now.get(k, 0.0) for k in keys],
        }
    ).assign(change_points=lambda f: f["now_pct"] - f["production_pct"])
