"""The EEA's words, normalised: fuel types in either case, and one spelling per make.

Shared by preprocessing and by the model itself, so that a client sending `VW` or `PETROL`
gets the same answer as one sending `VOLKSWAGEN` or `petrol`.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numpy as np
import pandas as pd

FUEL_TYPES: tuple[str, ...] = (
    "petrol",
    "diesel",
    "petrol/electric",
    "diesel/electric",
    "electric",
    "lpg",
    "ng",
    "ng-biomethane",
    "e85",
    "hydrogen",
    "unknown",
)
# WLTP CO2 of these is 0 g/km by definition: no regressor is asked about them.
ZERO_EMISSION_FUEL_TYPES: frozenset[str] = frozenset({"electric", "hydrogen"})
HYBRID_FUEL_TYPES: frozenset[str] = frozenset({"petrol/electric", "diesel/electric"})
# The EEA's fuel modes (Fm), one letter each, upper case once normalised.
FUEL_MODES: dict[str, str] = {
    "M": "mono-fuel",
    "B": "bi-fuel",
    "F": "flex-fuel",
    "H": "hybrid, not charged from the grid",
    "P": "plug-in hybrid",
    "E": "electric",
}

# g CO2 per km for 1 l/100 km (per m³/100 km for natural gas): the carbon in a unit of each fuel.
# Petrol, diesel and natural gas are what the 2021 EEA data shows for WLTP (median Ewltp/Fc);
# LPG and E85 follow from their carbon content relative to petrol.
CO2_PER_FUEL_LITRE_G_KM: dict[str, float] = {
    "petrol": 22.7,
    "diesel": 26.3,
    "lpg": 16.4,
    "ng": 20.0,
    "ng-biomethane": 20.0,
    "e85": 16.0,
    "petrol/electric": 22.7,
    "diesel/electric": 26.3,
}

# Spellings seen in the EEA data for the same make (after upper-casing, accent and
# punctuation folding).
MAKE_ALIASES: dict[str, str] = {
    "VW": "VOLKSWAGEN",
    "VOLKSWAGEN VW": "VOLKSWAGEN",
    "VOLKSWAGEN AG": "VOLKSWAGEN",
    "KODA": "SKODA",
    "MERCEDES": "MERCEDES-BENZ",
    "MERCEDES BENZ": "MERCEDES-BENZ",
    "MERCEDES-AMG": "MERCEDES-BENZ",
    "BMW I": "BMW",
    "DS AUTOMOBILES": "DS",
    "ALFA-ROMEO": "ALFA ROMEO",
    "LAND-ROVER": "LAND ROVER",
    "RANGE ROVER": "LAND ROVER",
    "SSANGYONG MOTOR": "SSANGYONG",
    "MG MOTOR": "MG",
    "MG MOTOR UK": "MG",
    "ROLLS-ROYCE": "ROLLS ROYCE",
}
_PUNCTUATION = re.compile(r"[.,;/_]+")
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=4096)
def _normalise_make_text(text: str) -> str | None:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).upper()
    text = text.replace("?", "")  # a character lost in a legacy encoding: ?KODA
    text = _SPACES.sub(" ", _PUNCTUATION.sub(" ", text)).strip()
    if not text:
        return None
    return MAKE_ALIASES.get(text, text)


def normalise_make(make: object) -> str | None:
    """`VOLKSWAGEN, VW` / `VW` -> `VOLKSWAGEN`, `ŠKODA` / `?KODA` / `Skoda` -> `SKODA`."""
    if _missing(make):
        return None
    return _normalise_make_text(str(make))


def normalise_makes(makes: pd.Series) -> pd.Series:
    """Cached per spelling: a year has ~100 of them in ~100k rows, a request has one."""
    return pd.Series([normalise_make(m) for m in makes.to_numpy(dtype=object)], index=makes.index, dtype="string")


@lru_cache(maxsize=256)
def _normalise_fuel_text(text: str) -> str:
    return text.strip().lower()


def normalise_fuel_type(fuel_type: object) -> str | None:
    """Lower case, trimmed: the 2021 `PETROL/ELECTRIC` and the 2025 `petrol/electric` are one type."""
    if _missing(fuel_type):
        return None
    return _normalise_fuel_text(str(fuel_type))


def normalise_fuel_types(fuel_types: pd.Series) -> pd.Series:
    values = [normalise_fuel_type(v) for v in fuel_types.to_numpy(dtype=object)]
    return pd.Series(values, index=fuel_types.index, dtype="string")


def normalise_fuel_mode(fuel_mode: object) -> str | None:
    """`m ` -> `M`: the EEA's one-letter fuel modes (M mono-fuel, B bi-fuel, F flex-fuel, H hybrid,
    P plug-in hybrid, E electric)."""
    if _missing(fuel_mode):
        return None
    return str(fuel_mode).strip().upper()


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))
