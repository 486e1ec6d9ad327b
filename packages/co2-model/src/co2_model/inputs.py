"""The model's measured inputs, declared once: name (with unit), EEA column, unit, physical range.

The raw data's validation, preprocessing's removal of impossible rows, the column lists and the
prediction service's request schema all derive from this table, so a limit changed here changes
everywhere: a value the pipeline would drop as impossible is also refused at the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MeasuredInput:
    """One measured property of a car; a value outside [minimum, maximum] cannot be a real car."""

    name: str  # the project's name, with its unit
    eea_column: str  # the discodata column it comes from
    unit: str
    minimum: float
    maximum: float
    description: str
    in_every_table: bool  # every yearly EEA table has the column; the others are asked for where present


# Physical limits: values outside them are impossible, not merely unusual (the heaviest cars in the
# data weigh ~4.6 t, the weakest have ~8 kW). The model reads 0 as "not given" (no combustion
# engine, no fuel consumption, no eco-innovation). In the order of the model's input columns.
MEASURED_INPUTS: tuple[MeasuredInput, ...] = (
    MeasuredInput("mass_kg", "M (kg)", "kg", 300, 7_000, "Mass in running order", True),
    MeasuredInput("test_mass_kg", "Mt", "kg", 300, 7_500, "WLTP test mass", False),
    MeasuredInput("engine_capacity_cm3", "Ec (cm3)", "cm³", 0, 10_000, "Engine capacity", True),
    MeasuredInput("engine_power_kw", "Ep (KW)", "kW", 1, 1_500, "Engine power", True),
    MeasuredInput("eco_innovation_savings_g_km", "Erwltp (g/km)", "g/km", 0, 15, "Eco-innovation savings", True),
    MeasuredInput(
        "fuel_consumption_l_100km",
        "Fc",
        "l/100 km (m³/100 km for natural gas)",
        0,
        40,
        "WLTP combined fuel consumption",
        True,
    ),
    MeasuredInput("electric_consumption_wh_km", "Z (Wh/km)", "Wh/km", 0, 1_000, "Electric consumption", False),
    MeasuredInput(
        "electric_range_km", "Electric range (km)", "km", 0, 2_000, "Electric range (plug-in hybrids)", False
    ),
    MeasuredInput("wheelbase_mm", "W (mm)", "mm", 1_000, 6_000, "Wheelbase", False),
    MeasuredInput("track_width_mm", "At1 (mm)", "mm", 500, 3_000, "Track width of the steering axle", False),
)
MEASURED: dict[str, MeasuredInput] = {declared.name: declared for declared in MEASURED_INPUTS}

# A typical car (a 2021 petrol Volkswagen): the prediction service's example and the prediction page's
# starting values.
EXAMPLE_CAR: dict[str, Any] = {
    "mass_kg": 1280,
    "engine_capacity_cm3": 999,
    "engine_power_kw": 81,
    "fuel_type": "PETROL",
    "fuel_consumption_l_100km": 5.3,
    "eco_innovation_savings_g_km": 1.1,
    "make": "VOLKSWAGEN",
}
