"""Column names: the EEA's discodata spelling on the wire, the project's own names (with units) inside."""

from __future__ import annotations

# discodata column -> domain column. Raw snapshots keep the discodata names (they are what the
# source said); everything after preprocessing speaks in the domain names.
REQUIRED_SOURCE_COLUMNS: dict[str, str] = {
    "MS": "member_state",
    "Mk": "make",
    "Ft": "fuel_type",
    "Fm": "fuel_mode",
    "M (kg)": "mass_kg",
    "Ec (cm3)": "engine_capacity_cm3",
    "Ep (KW)": "engine_power_kw",
    "Erwltp (g/km)": "eco_innovation_savings_g_km",
    "Fc": "fuel_consumption_l_100km",
    "Ewltp (g/km)": "co2_wltp_g_km",
}
# Columns that some yearly tables lack; the download asks for those the table has.
OPTIONAL_SOURCE_COLUMNS: dict[str, str] = {
    "Mt": "test_mass_kg",
    "Z (Wh/km)": "electric_consumption_wh_km",
    "Electric range (km)": "electric_range_km",
    "W (mm)": "wheelbase_mm",
    "At1 (mm)": "track_width_mm",
}
SOURCE_TO_DOMAIN: dict[str, str] = {**REQUIRED_SOURCE_COLUMNS, **OPTIONAL_SOURCE_COLUMNS}

# Added by the download: the registration year (from the table queried) and the count of
# registrations that share the configuration (COUNT(*) on the server).
YEAR = "year"
REGISTRATIONS = "registrations"
COUNT_ALIAS = "n"

TARGET = "co2_wltp_g_km"
FUEL_TYPE = "fuel_type"
MAKE = "make"
MEMBER_STATE = "member_state"

NUMERIC_FEATURES: list[str] = [
    "mass_kg",
    "test_mass_kg",
    "engine_capacity_cm3",
    "engine_power_kw",
    "eco_innovation_savings_g_km",
    "fuel_consumption_l_100km",
    "electric_consumption_wh_km",
    "electric_range_km",
    "wheelbase_mm",
    "track_width_mm",
]
CATEGORICAL_FEATURES: list[str] = ["fuel_type", "fuel_mode"]
# What a caller may send for one car: every model takes all of them, the "without make"
# candidates simply ignore `make`.
MODEL_INPUT_COLUMNS: list[str] = [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, MAKE]
