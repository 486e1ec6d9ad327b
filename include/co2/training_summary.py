"""What a model version says about the cars it was trained on, for people: where a car sits among them.

The training step summarises its training cars (per fuel type, the registration-weighted percentiles of
their WLTP CO2; the makes by registrations) and stores the summary with the model, in its MLmodel file's
`metadata`; the prediction service reads it back when it loads a version and gives it on GET /model,
and the prediction page draws a car's answer against its fuel type's distribution. The summary is small
and bounded (101 numbers per fuel type), and it is checked again on the way in: the registry is a trust
boundary, and a version whose summary is malformed is served without one.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from co2_model import columns as col

METADATA_KEY = "co2_training_summary"
PERCENTILES: tuple[int, ...] = tuple(range(101))  # 0 (the lowest) to 100 (the highest), every percent
MAX_FUEL_TYPES = 64
MAX_MAKES = 500
MAX_CO2_G_KM = 2_000.0

FuelType = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Make = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class FuelTypeCo2(BaseModel):
    """The WLTP CO2 of one fuel type's training cars, each weighted by its registrations."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    registrations: int = Field(ge=0, description="Registrations of the fuel type in the training data")
    percentiles_g_km: list[Annotated[float, Field(ge=0, le=MAX_CO2_G_KM)]] = Field(
        min_length=len(PERCENTILES),
        max_length=len(PERCENTILES),
        description="WLTP CO2 at each percent of the registrations, 0 % (lowest) to 100 % (highest), g/km",
    )

    @field_validator("percentiles_g_km")
    @classmethod
    def _rising(cls, values: list[float]) -> list[float]:
        if any(later < earlier for earlier, later in pairwise(values)):
            raise ValueError("percentiles must not decrease")
        return values


class TrainingSummary(BaseModel):
    """The training cars of a model version: CO2 per fuel type and the makes, most registered first."""

    model_config = ConfigDict(extra="forbid")

    co2_wltp_g_km_by_fuel_type: dict[FuelType, FuelTypeCo2] = Field(max_length=MAX_FUEL_TYPES)
    makes: list[Make] = Field(default_factory=list, max_length=MAX_MAKES)


def weighted_percentiles(values: np.ndarray, weights: np.ndarray) -> list[float]:
    """The value below which each percent of the weight lies (0 %: the lowest value, 100 %: the highest)."""
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    cumulative = np.cumsum(weights)
    middles = (cumulative - weights / 2) / cumulative[-1]  # each value stands in the middle of its weight
    return [round(float(v), 1) for v in np.interp(np.asarray(PERCENTILES) / 100, middles, values)]


def summarise(train: pd.DataFrame) -> TrainingSummary:
    """The summary of a training split (domain columns, with `registrations`)."""
    weights = train[col.REGISTRATIONS].to_numpy(dtype=np.float64)
    co2 = train[col.TARGET].to_numpy(dtype=np.float64)
    usable = np.isfinite(co2) & (weights > 0)
    by_fuel: dict[str, FuelTypeCo2] = {}
    fuel_types = train[col.FUEL_TYPE].astype("string").to_numpy(dtype=object)
    for fuel_type in sorted({str(f) for f in fuel_types[usable] if isinstance(f, str)})[:MAX_FUEL_TYPES]:
        chosen = usable & (fuel_types == fuel_type)
        by_fuel[fuel_type] = FuelTypeCo2(
            registrations=int(weights[chosen].sum()),
            percentiles_g_km=weighted_percentiles(np.clip(co2[chosen], 0, MAX_CO2_G_KM), weights[chosen]),
        )
    makes = train.loc[usable, [col.MAKE, col.REGISTRATIONS]].dropna()
    ranked = makes.groupby(col.MAKE, observed=True)[col.REGISTRATIONS].sum().sort_values(ascending=False, kind="stable")
    return TrainingSummary(
        co2_wltp_g_km_by_fuel_type=by_fuel,
        makes=[str(make)[:64] for make in ranked.index[:MAX_MAKES] if str(make).strip()],
    )


def from_metadata(metadata: Any) -> TrainingSummary | None:
    """The summary stored in a version's MLmodel metadata; None when it has none. Raises ValueError
    (pydantic's ValidationError) when it is there but malformed."""
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        return None
    return TrainingSummary.model_validate(metadata[METADATA_KEY])
