"""Request and response bodies: the project's own names, with units, and the rules they obey."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from co2.training_summary import TrainingSummary
from co2_model.inputs import EXAMPLE_CAR, MEASURED
from co2_model.vocabulary import FUEL_MODES, FUEL_TYPES

MAX_BATCH_CARS = 10_000
# Room for the longest EEA fuel type with some blanks around it, and for any make (the EEA's
# longest is ~20 characters): enough for every real car, and a bound on what a request can carry.
FUEL_TYPE_MAX_CHARS = 32
MAKE_MAX_CHARS = 64
FUEL_MODE_PATTERN = f"^[{''.join(mode + mode.lower() for mode in FUEL_MODES)}]$"


def _measured(name: str) -> Any:
    """The field of a measured input: its physical range, unit and EEA column from co2_model.inputs."""
    declared = MEASURED[name]
    return Field(
        None,
        ge=declared.minimum,
        le=declared.maximum,
        description=f"{declared.description} ({declared.eea_column}), {declared.unit}",
    )


class Car(BaseModel):
    """One car's technical data, as in the EEA monitoring data. Only `fuel_type` is required."""

    # NaN, Infinity and 1e400 are not measurements: refused like any other impossible value
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [EXAMPLE_CAR]})

    fuel_type: str = Field(
        max_length=FUEL_TYPE_MAX_CHARS,
        description="EEA fuel type, either case: petrol, diesel, petrol/electric, electric, ...",
    )
    mass_kg: float | None = _measured("mass_kg")
    engine_capacity_cm3: float | None = _measured("engine_capacity_cm3")
    engine_power_kw: float | None = _measured("engine_power_kw")
    fuel_consumption_l_100km: float | None = _measured("fuel_consumption_l_100km")
    eco_innovation_savings_g_km: float | None = _measured("eco_innovation_savings_g_km")
    make: str | None = Field(
        None, max_length=MAKE_MAX_CHARS, description="Make (Mk), any EEA spelling: VW, VOLKSWAGEN, ..."
    )
    fuel_mode: str | None = Field(
        None,
        max_length=1,
        pattern=FUEL_MODE_PATTERN,
        description="EEA fuel mode (Fm), either case: "
        + ", ".join(f"{mode} {meaning}" for mode, meaning in FUEL_MODES.items()),
    )
    test_mass_kg: float | None = _measured("test_mass_kg")
    electric_consumption_wh_km: float | None = _measured("electric_consumption_wh_km")
    electric_range_km: float | None = _measured("electric_range_km")
    wheelbase_mm: float | None = _measured("wheelbase_mm")
    track_width_mm: float | None = _measured("track_width_mm")

    @field_validator("fuel_type")
    @classmethod
    def _known_fuel_type(cls, value: str) -> str:
        normalised = value.strip().lower()
        if normalised not in FUEL_TYPES:
            raise ValueError(f"unknown fuel type {value!r}; use one of {', '.join(FUEL_TYPES)} (either case)")
        return normalised


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"cars": [EXAMPLE_CAR]}]})

    cars: list[Car] = Field(min_length=1, max_length=MAX_BATCH_CARS, description=f"1 to {MAX_BATCH_CARS:,} cars")


class Answer(BaseModel):
    """One car's answer: WLTP CO2, the interval it lies in for nine cars in ten, and how it was made."""

    co2_wltp_g_km: float = Field(description="Predicted WLTP CO2 emissions, g/km")
    co2_lower_g_km: float | None = Field(
        description="Lower end of the 90 % interval, g/km (null: the model version has no intervals)"
    )
    co2_upper_g_km: float | None = Field(description="Upper end of the 90 % interval, g/km")
    method: str = Field(
        description="How the answer was made: zero_emission_rule (electric and hydrogen cars), "
        "fuel_consumption (WLTP fuel consumption x the fuel's carbon) or regressor"
    )


EXAMPLE_ANSWER: dict[str, Any] = {
    "co2_wltp_g_km": 120.31,
    "co2_lower_g_km": 119.11,
    "co2_upper_g_km": 121.51,
    "method": "fuel_consumption",
}


class Prediction(Answer):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={"examples": [{**EXAMPLE_ANSWER, "model_name": "co2-emissions", "model_version": "3"}]},
    )

    model_name: str
    model_version: str


class BatchItem(Answer):
    pass


class BatchPrediction(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [{"predictions": [EXAMPLE_ANSWER], "model_name": "co2-emissions", "model_version": "3"}]
        },
    )

    predictions: list[BatchItem] = Field(description="One per car, in the order of the request")
    model_name: str
    model_version: str


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str
    run_id: str | None
    alias: str
    loaded_at: str
    metrics: dict[str, float]
    lineage: dict[str, str]
    input_ranges: dict[str, list[float]]
    training_summary: TrainingSummary | None = Field(
        default=None,
        description="The training cars: per fuel type, the registration-weighted percentiles of their WLTP CO2, "
        "and the makes by registrations (null: the version was trained before this was recorded)",
    )


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    model_version: str | None
    registry_reachable: bool
    seconds_since_registry_poll: float | None
    last_error: str | None
    reasons: list[str]
    registry_events: str = Field(
        description="How the service learns of a promotion: webhook and polling, or polling only"
    )
