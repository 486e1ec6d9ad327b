"""The run report's figures, as PNG bytes: matplotlib's object API (no pyplot, no global state, no
display), so figures can be drawn in any worker thread and cost a fraction of a second each."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from co2.drift import PSI_MODERATE, PSI_SHIFTED, FeatureShift
from co2_model import columns as col

DPI = 80
STATUS_COLOURS = {"stable": "#4c9f70", "moderate": "#e0a030", "shifted": "#c8553d"}
# Registrations per configuration, for the "error against registrations" panel.
REGISTRATION_BUCKETS = (0, 1, 9, 99, 999, np.inf)
REGISTRATION_LABELS = ("1", "2–9", "10–99", "100–999", "1000+")
GROUPS_SHOWN = 12


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _barh(ax: Any, counts: Mapping[str, float], title: str, xlabel: str, limit: int = 20) -> None:
    items = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[:limit]
    if not items:
        ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
    labels, values = [k for k, _ in items][::-1], [v for _, v in items][::-1]
    ax.barh(labels, values, color="#4878a8")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.tick_params(axis="y", labelsize=8)


def data_figure(
    registrations_by: dict[str, dict[str, int]], cars: pd.DataFrame, removed_by_rule: dict[str, int]
) -> bytes:
    """Registrations by year, member state, fuel type and make; the CO2 distribution per fuel type;
    the rows preprocessing removed, per rule."""
    figure = Figure(figsize=(15, 9), layout="constrained")
    axes = figure.subplots(2, 3)
    years = registrations_by.get(col.YEAR, {})
    axes[0, 0].bar(sorted(years), [years[y] for y in sorted(years)], color="#4878a8")
    axes[0, 0].set_title("Registrations by year")
    _barh(axes[0, 1], registrations_by.get(col.MEMBER_STATE, {}), "By member state", "registrations", limit=30)
    _barh(axes[0, 2], registrations_by.get(col.FUEL_TYPE, {}), "By fuel type", "registrations")
    _barh(axes[1, 0], registrations_by.get(col.MAKE, {}), "By make (biggest)", "registrations")
    ax = axes[1, 1]
    weights = cars[col.REGISTRATIONS].to_numpy(dtype=np.float64)
    bins = np.linspace(0, max(1.0, float(np.nanpercentile(cars[col.TARGET], 99.5))), 60)
    fuels = cars.groupby(col.FUEL_TYPE, observed=True)[col.REGISTRATIONS].sum().sort_values(ascending=False)
    for fuel in fuels.index[:5]:
        chosen = (cars[col.FUEL_TYPE] == fuel).to_numpy()
        ax.hist(cars.loc[chosen, col.TARGET], bins=bins, weights=weights[chosen], histtype="step", label=str(fuel))
    ax.set_title("WLTP CO₂ per registration, by fuel type")
    ax.set_xlabel("g/km")
    ax.legend(fontsize=8)
    removed = {rule: n for rule, n in removed_by_rule.items() if n}
    _barh(axes[1, 2], removed, "Rows removed by preprocessing, per rule", "configurations")
    return png(figure)


def drift_figure(found: list[FeatureShift], mix: pd.DataFrame) -> bytes:
    """PSI per input against production's training data, and the fuel mix then and now."""
    figure = Figure(figsize=(14, 5), layout="constrained")
    left, right = figure.subplots(1, 2)
    ordered = found[::-1]
    left.barh([s.feature for s in ordered], [s.psi for s in ordered], color=[STATUS_COLOURS[s.status] for s in ordered])
    for threshold in (PSI_MODERATE, PSI_SHIFTED):
        left.axvline(threshold, color="#555555", linestyle="--", linewidth=1)
    left.set_title(f"Population stability index (moderate > {PSI_MODERATE}, shifted > {PSI_SHIFTED})")
    left.set_xlabel("PSI")
    shown = mix.head(GROUPS_SHOWN).iloc[::-1]
    positions = np.arange(len(shown))
    right.barh(positions - 0.2, shown["production_pct"], height=0.4, label="production's training data")
    right.barh(positions + 0.2, shown["now_pct"], height=0.4, label="this run")
    right.set_yticks(positions, shown.iloc[:, 0].astype(str))
    right.set_title("Fuel mix, % of registrations")
    right.legend(fontsize=8)
    return png(figure)


def candidates_figure(table: pd.DataFrame) -> bytes:
    """MAE of each candidate on the test split (and production's), with each backtest's MAE."""
    figure = Figure(figsize=(10, 0.5 * len(table) + 1.5), layout="constrained")
    ax = figure.subplots()
    shown = table.iloc[::-1]
    positions = np.arange(len(shown))
    ax.barh(positions + 0.2, shown["mae_g_km"], height=0.4, label="test split", color="#4878a8")
    backtest = shown["backtest_mae_g_km"].astype("Float64").fillna(0.0).to_numpy(dtype=np.float64)
    if backtest.any():
        ax.barh(positions - 0.2, backtest, height=0.4, label="backtest (next year)", color="#a0a0a0")
    ax.set_yticks(positions, shown["candidate"])
    ax.set_xlabel("MAE, g/km (per registration)")
    ax.set_title("Candidates, best first")
    ax.legend(fontsize=8)
    return png(figure)


def weighted_errors(frame: pd.DataFrame, by: str, limit: int = GROUPS_SHOWN) -> pd.DataFrame:
    """Per value of `by` (the biggest by registrations): registrations, MAE and bias (predicted − actual)."""
    w = frame[col.REGISTRATIONS]
    grouped = (
        frame.assign(_w=w, _abs=frame["residual"].abs() * w, _res=frame["residual"] * w)
        .groupby(frame[by].astype("string").fillna("missing"))[["_w", "_abs", "_res"]]
        .sum()
        .sort_values("_w", ascending=False)
        .head(limit)
    )
    return pd.DataFrame(
        {
            "registrations": grouped["_w"].astype(int),
            "mae_g_km": grouped["_abs"] / grouped["_w"],
            "bias_g_km": grouped["_res"] / grouped["_w"],
        }
    )


def candidate_figure(name: str, test: pd.DataFrame, predicted: np.ndarray) -> bytes:
    """One candidate on the test split: predicted against actual, error against registrations, and
    MAE and bias by fuel type, fuel mode, member state and make."""
    answered = ~np.isnan(predicted)
    frame = test[answered].assign(predicted=predicted[answered])
    frame = frame.assign(residual=frame["predicted"] - frame[col.TARGET])
    weights = frame[col.REGISTRATIONS].to_numpy(dtype=np.float64)
    figure = Figure(figsize=(16, 9), layout="constrained")
    figure.suptitle(f"{name} on the test split ({int(weights.sum()):,} registrations)")
    axes = figure.subplots(2, 3)
    ax = axes[0, 0]
    top = float(max(frame[col.TARGET].max(), frame["predicted"].max(), 1.0))
    ax.hexbin(frame[col.TARGET], frame["predicted"], C=weights, reduce_C_function=np.sum, gridsize=45, bins="log")
    ax.plot([0, top], [0, top], color="#c8553d", linewidth=1)
    ax.set_xlabel("actual WLTP CO₂, g/km")
    ax.set_ylabel("predicted, g/km")
    ax.set_title("Predicted against actual (colour: registrations, log)")
    ax = axes[0, 1]
    bucket = pd.cut(frame[col.REGISTRATIONS], REGISTRATION_BUCKETS, labels=REGISTRATION_LABELS)
    by_bucket = weighted_errors(frame.assign(bucket=bucket.astype("string")), "bucket", limit=len(REGISTRATION_LABELS))
    by_bucket = by_bucket.reindex([label for label in REGISTRATION_LABELS if label in by_bucket.index])
    ax.bar(by_bucket.index, by_bucket["mae_g_km"], color="#4878a8")
    ax.set_xlabel("registrations of the configuration")
    ax.set_ylabel("MAE, g/km")
    ax.set_title("Error against registrations")
    panels = [(col.FUEL_TYPE, axes[0, 2]), ("fuel_mode", axes[1, 0]), (col.MEMBER_STATE, axes[1, 1])]
    panels.append((col.MAKE, axes[1, 2]))
    for by, ax in panels:
        errors = weighted_errors(frame, by).iloc[::-1]
        positions = np.arange(len(errors))
        ax.barh(positions + 0.2, errors["mae_g_km"], height=0.4, label="MAE", color="#4878a8")
        ax.barh(positions - 0.2, errors["bias_g_km"], height=0.4, label="bias", color="#e0a030")
        ax.set_yticks(positions, errors.index)
        ax.axvline(0, color="#555555", linewidth=0.8)
        ax.set_title(f"By {by.replace('_', ' ')}")
        ax.set_xlabel("g/km")
        ax.tick_params(axis="y", labelsize=8)
    axes[0, 2].legend(fontsize=8)
    return png(figure)
