"""Column names: the EEA's discodata spelling on the wire, the project's own names (with units) inside."""

from __future__ import annotations

from co2_model.inputs import MEASURED_INPUTS

# discodata column -> domain column. Raw snapshots keep the discodata names (they are what the
# source said); everything after preprocessing speaks in the domain names. The measured inputs'
# columns come from their declaration in co2_model.inputs.
REQUIRED_SOURCE_COLUMNS: dict[str, str] = {
    "MS": "member_state",
    "Mk": "make",
    "Ft": "fuel_type",
    "Fm": "fuel_mode",
    **{declared.eea_column: declared.name for declared in MEASURED_INPUTS if declared.in_every_table},
    "Ewltp (g/km)": "co2_wltp_g_km",
}
# Columns that some yearly tables lack; the download asks for those the table has.
OPTIONAL_SOURCE_COLUMNS: dict[str, str] = {
    declared.eea_column: declared.name for declared in MEASURED_INPUTS if not declared.in_every_table
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

NUMERIC_FEATURES: list[str] = [declared.name for declared in MEASURED_INPUTS]
CATEGORICAL_FEATURES: list[str] = ["fuel_type", "fuel_mode"]
# What a caller may send for one car: every model takes all of them, the "without make"
# candidates simply ignore `make`.
MODEL_INPUT_COLUMNS: list[str] = [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, MAKE]
# What a caller knows from a car's papers: the fields of the original project's interface.
BASIC_INPUT_COLUMNS: list[str] = [
    "mass_kg",
    "engine_capacity_cm3",
    "engine_power_kw",
    "fuel_type",
    "fuel_consumption_l_100km",
    "eco_innovation_savings_g_km",
    MAKE,
]
