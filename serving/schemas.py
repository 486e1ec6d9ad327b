"""Request and response bodies: the project's own names, with units, and the rules they obey."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from co2.vocabulary import FUEL_TYPES

MAX_BATCH_CARS = 10_000
EXAMPLE_CAR: dict[str, Any] = {
    "mass_kg": 1280,
    "engine_capacity_cm3": 999,
    "engine_power_kw": 81,
    "fuel_type": "PETROL",
    "fuel_consumption_l_100km": 5.3,
    "eco_innovation_savings_g_km": 1.1,
    "make": "VOLKSWAGEN",
}


class Car(BaseModel):
    """One car's technical data, as in the EEA monitoring data. Only `fuel_type` is required."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_CAR]})

    fuel_type: str = Field(description="EEA fuel type, either case: petrol, diesel, petrol/electric, electric, ...")
    mass_kg: float | None = Field(None, gt=300, le=7_000, description="Mass in running order (M)")
    engine_capacity_cm3: float | None = Field(None, gt=0, le=10_000, description="Engine capacity (Ec)")
    engine_power_kw: float | None = Field(None, gt=0, le=1_500, description="Engine power (Ep)")
    fuel_consumption_l_100km: float | None = Field(
        None, gt=0, le=40, description="WLTP combined fuel consumption (Fc), l/100 km (kg/100 km for gas)"
    )
    eco_innovation_savings_g_km: float | None = Field(None, ge=0, le=15, description="Eco-innovation savings (Erwltp)")
    make: str | None = Field(None, max_length=100, description="Make (Mk), any EEA spelling: VW, VOLKSWAGEN, ...")
    fuel_mode: str | None = Field(
        None,
        pattern="^[MmBbFfHhPpEe]$",
        description="EEA fuel mode (Fm): M mono, B bi, F flex, H hybrid, P plug-in, E electric",
    )
    test_mass_kg: float | None = Field(None, gt=300, le=7_500, description="WLTP test mass (Mt)")
    electric_consumption_wh_km: float | None = Field(None, ge=0, le=1_000, description="Electric consumption (Z)")
    electric_range_km: float | None = Field(None, ge=0, le=2_000, description="Electric range (plug-in hybrids)")
    wheelbase_mm: float | None = Field(None, ge=1_000, le=6_000, description="Wheelbase (W)")
    track_width_mm: float | None = Field(None, ge=500, le=3_000, description="Track width of the steering axle (At1)")

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


class Prediction(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={"examples": [{"co2_wltp_g_km": 120.3, "model_name": "co2-emissions", "model_version": "3"}]},
    )

    co2_wltp_g_km: float = Field(description="Predicted WLTP CO2 emissions, g/km")
    model_name: str
    model_version: str


class BatchItem(BaseModel):
    co2_wltp_g_km: float


class BatchPrediction(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

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


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    model_version: str | None
    registry_reachable: bool
    seconds_since_registry_poll: float | None
    last_error: str | None
    reasons: list[str]
