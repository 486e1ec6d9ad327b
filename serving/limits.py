"""How many bytes a legal request can need, computed from the widest text each field of a car can take.

A body larger than the largest legal one is refused as it streams in, before it is parsed: the
caps follow the schema (a field added or widened there widens them), so they never refuse a
request that validation would accept, and never let through one hundred times more.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from co2_model import columns as col
from co2_model.inputs import MEASURED
from co2_model.vocabulary import FUEL_TYPES
from serving.schemas import FUEL_TYPE_MAX_CHARS, MAKE_MAX_CHARS, MAX_BATCH_CARS

# The longest text of a float64 (sign, 17 significant digits, exponent), and the widest character:
# four bytes in UTF-8, twelve in JSON's ASCII escapes (a surrogate pair of \uXXXX).
WIDEST_NUMBER = -2.2250738585072014e-308
WIDEST_CHARACTER = "\U0001f697"
# Multipart framing around the CSV: boundaries, the part's headers, the file name.
MULTIPART_OVERHEAD_BYTES = 16 * 1024
# Routes without a body of their own (GET, unknown paths): headers are all they need.
OTHER_BODY_BYTES = 4 * 1024


def widest_car() -> dict[str, Any]:
    """The widest text a valid car can have in each field (numbers: the widest of any float64)."""
    car: dict[str, Any] = dict.fromkeys(MEASURED, WIDEST_NUMBER)
    car["fuel_type"] = max(FUEL_TYPES, key=len).center(FUEL_TYPE_MAX_CHARS)
    car["fuel_mode"] = "M"
    car["make"] = WIDEST_CHARACTER * MAKE_MAX_CHARS
    return car


def _json_bytes(body: object) -> int:
    # indented: a client that pretty-prints its body must fit too
    return len(json.dumps(body, indent=4).encode())


def _csv_bytes(rows: list[list[Any]]) -> int:
    text = io.StringIO()
    csv.writer(text, quoting=csv.QUOTE_ALL).writerows(rows)
    return len(text.getvalue().encode())


def _csv_header() -> list[str]:
    """Each column under the longer of its names (ours or the EEA's)."""
    eea_name = {domain: source for source, domain in col.SOURCE_TO_DOMAIN.items()}
    return [max(name, eea_name.get(name, name), key=len) for name in widest_car()]


CAR_JSON_BYTES = _json_bytes(widest_car())
BATCH_JSON_BYTES = _json_bytes({"cars": []}) + MAX_BATCH_CARS * (_json_bytes({"cars": [widest_car()]}) + 2)
CSV_BYTES = _csv_bytes([_csv_header()]) + MAX_BATCH_CARS * _csv_bytes([list(widest_car().values())])

# Body caps by route template; any other route gets OTHER_BODY_BYTES.
BODY_BYTES: dict[str, int] = {
    "/predict": CAR_JSON_BYTES,
    "/predict/batch": BATCH_JSON_BYTES,
    "/predict/batch/csv": CSV_BYTES + MULTIPART_OVERHEAD_BYTES,
}
