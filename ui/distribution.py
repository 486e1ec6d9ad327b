"""Where a car's CO2 sits among its fuel type's training cars, from the percentiles GET /model gives.

The percentiles (0 % to 100 % of the registrations, every percent) define a piecewise-linear distribution:
the share of registrations below or above a value, and a histogram of shares, follow from them alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

NICE_WIDTHS_G_KM = (1, 2, 5, 10, 20, 25, 50, 100)
TARGET_BARS = 40


def share_below(percentiles: list[float], co2_g_km: float) -> float:
    """Percent of the registrations that emit less than `co2_g_km`."""
    points = np.asarray(percentiles, dtype=np.float64)
    last = len(points) - 1
    index = int(np.searchsorted(points, co2_g_km, side="left"))  # points below the value
    if index == 0:
        return 0.0
    if index > last:
        return 100.0
    low, high = points[index - 1], points[index]  # low < value <= high
    return float((index - 1 + (co2_g_km - low) / (high - low)) * 100 / last)


def share_above(percentiles: list[float], co2_g_km: float) -> float:
    """Percent of the registrations that emit more than `co2_g_km`."""
    points = np.asarray(percentiles, dtype=np.float64)
    last = len(points) - 1
    index = int(np.searchsorted(points, co2_g_km, side="right"))  # points at or below the value
    if index == 0:
        return 100.0
    if index > last:
        return 0.0
    low, high = points[index - 1], points[index]  # low <= value < high
    return float(100 - (index - 1 + (co2_g_km - low) / (high - low)) * 100 / last)


def histogram(percentiles: list[float]) -> pd.DataFrame:
    """Share of the registrations (%) in bars of a round width (g/km), about forty over the whole range."""
    low, high = float(percentiles[0]), float(percentiles[-1])
    width = next((w for w in NICE_WIDTHS_G_KM if (high - low) / w <= TARGET_BARS), NICE_WIDTHS_G_KM[-1])
    edges = np.arange(np.floor(low / width) * width, np.floor(high / width) * width + 2 * width, width)
    below = np.array([share_below(percentiles, edge) for edge in edges])
    return pd.DataFrame({"from_g_km": edges[:-1], "to_g_km": edges[1:], "share_pct": np.diff(below)})


def position(fuel_type: str, summary: dict[str, Any], co2_g_km: float, years: str) -> str:
    """A sentence: how many of the fuel type's training cars emit less, and more, than this car."""
    registrations = int(summary["registrations"])
    percentiles = summary["percentiles_g_km"]
    below, above = share_below(percentiles, co2_g_km), share_above(percentiles, co2_g_km)
    same = 100 - below - above
    when = f" registered in {years}" if years else ""
    parts = [f"{below:.0f} % emit less than this car", f"{above:.0f} % more"]
    if same >= 0.5:
        parts.append(f"{same:.0f} % as much")
    return (
        f"Among the {registrations:,} {fuel_type} cars{when} that the model was trained on, "
        + ", ".join(parts[:-1])
        + f" and {parts[-1]}."
    )


def chart(fuel_type: str, summary: dict[str, Any], co2_g_km: float) -> Any:
    """The fuel type's histogram with the car marked (an Altair chart, drawn in the browser by Vega-Lite)."""
    import altair as alt

    bars = (
        alt.Chart(histogram(summary["percentiles_g_km"]))
        .mark_bar(color="#8fb3d9")
        .encode(
            x=alt.X("from_g_km:Q", bin="binned", title="WLTP CO₂, g/km"),
            x2="to_g_km:Q",
            y=alt.Y("share_pct:Q", title=f"{fuel_type} registrations, %"),
            tooltip=[
                alt.Tooltip("from_g_km:Q", title="from, g/km"),
                alt.Tooltip("to_g_km:Q", title="to, g/km"),
                alt.Tooltip("share_pct:Q", title="share, %", format=".1f"),
            ],
        )
    )
    car = pd.DataFrame({"co2_g_km": [co2_g_km], "label": [f"this car: {co2_g_km:.1f} g/km"]})
    rule = alt.Chart(car).mark_rule(color="#d62728", strokeWidth=3).encode(x="co2_g_km:Q")
    label = (
        alt.Chart(car)
        .mark_text(align="left", dx=6, dy=-6, color="#d62728", fontWeight="bold")
        .encode(x="co2_g_km:Q", y=alt.value(12), text="label:N")
    )
    return (bars + rule + label).properties(height=280)
