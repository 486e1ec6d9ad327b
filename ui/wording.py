"""The service's answers in plain words: how an answer was made, and what is wrong with a car or a row.

The API says where and what (`loc`, `msg`, `type`) but never echoes the input; the page has the input (the
form's values, the user's own CSV), so it can say "row 3: M (kg) 50 is below the minimum 300 kg".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from co2_model.inputs import MEASURED
from co2_model.vocabulary import FUEL_MODES, FUEL_TYPES

# co2_model.model.METHODS, for people (co2_model.model itself is not imported: it brings scikit-learn)
METHODS: dict[str, str] = {
    "zero_emission_rule": "By rule: battery-electric and hydrogen cars emit 0 g/km",
    "fuel_consumption": "From its WLTP fuel consumption times the carbon in its fuel",
    "regressor": "Estimated by the model from the car's technical data",
    "ambiguous": "Not answered: the inputs do not tell a plug-in hybrid from one that burns all its fuel",
}
_LOCATION_WORDS = {"body", "cars", "file"}
SHOWN_VALUE_CHARS = 40


def method_in_words(method: str) -> str:
    return METHODS.get(method, method)


def row_of(error: Mapping[str, Any]) -> int | None:
    """The 0-based car (CSV row) an error is about, or None when it is about the request or the file."""
    return next((part for part in error.get("loc") or [] if isinstance(part, int)), None)


def field_of(error: Mapping[str, Any]) -> str | None:
    """The field an error names (`mass_kg`), or None when it is about a whole car, the request or the file."""
    names = [part for part in error.get("loc") or [] if isinstance(part, str) and part not in _LOCATION_WORDS]
    return names[-1] if names else None


def explain(
    error: Mapping[str, Any], values: Mapping[str, Any] | None = None, names: Mapping[str, str] | None = None
) -> str:
    """One problem as a sentence; `values` are what was sent by field, `names` the user's name of each field
    (a CSV's own column names). Prefixed with the row (1-based) when it is about one row of many."""
    row = row_of(error)
    prefix = f"row {row + 1}: " if row is not None else ""
    return prefix + problem(error, values, names)


def problem(
    error: Mapping[str, Any], values: Mapping[str, Any] | None = None, names: Mapping[str, str] | None = None
) -> str:
    """The problem itself, without where it is."""
    values, names = values or {}, names or {}
    field = field_of(error)
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    if field is None:
        return message
    label = names.get(field, field)
    value = _shown(values.get(field))
    given = f"{label} {value}" if value else label
    kind = str(error.get("type", ""))
    declared = MEASURED.get(field)
    if declared is not None and kind in ("greater_than_equal", "greater_than"):
        return f"{given} is below the minimum {declared.minimum:g} {declared.unit}"
    if declared is not None and kind in ("less_than_equal", "less_than"):
        return f"{given} is above the maximum {declared.maximum:g} {declared.unit}"
    if kind in ("float_parsing", "float_type"):
        return f"{given} is not a number"
    if kind == "finite_number":
        return f"{given} is not a finite number"
    if kind == "missing" or (kind == "string_type" and not value):
        return f"{label} is missing: every car needs it"
    if kind == "extra_forbidden":
        return f"{label} is not a field the service knows"
    if kind == "string_too_long":
        return f"{label} is longer than any real value"
    if field == "fuel_mode" and kind == "string_pattern_mismatch":
        modes = ", ".join(f"{mode} ({meaning})" for mode, meaning in FUEL_MODES.items())
        return f"{given} is not an EEA fuel mode; use one of {modes}"
    if field == "fuel_type" and kind == "value_error":
        return f"{given} is not an EEA fuel type; use one of {', '.join(FUEL_TYPES)} (either case)"
    return f"{label}: {message}"


def _shown(value: Any) -> str:
    """A value as the user wrote it, short; nothing for a value not given."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else f"{text[:SHOWN_VALUE_CHARS]}…"
