"""The model: scikit-learn pipelines that every MLflow client can load and that know the rules.

A registered model is `Pipeline([("features", CarFeatures()), ("regressor", WltpCo2Regressor(...))])`:

- `CarFeatures` normalises the vocabulary and derives physics features;
- `WltpCo2Regressor` answers by rule where physics or law decides, and asks a regressor otherwise:
  battery-electric and hydrogen cars emit 0 g/km by definition; a combustion car (or a non-plug-in
  hybrid, or a plug-in whose fuel consumption is already the weighted WLTP figure) emits its WLTP
  fuel consumption times its fuel's carbon factor, learned from the training data; every other car
  goes to one of the three regressor families, behind imputation with missing indicators, scaling
  and one-hot encoding.

The rules live inside the model, and this package is the only code shipped with a model version, so
`mlflow models serve` and the prediction service answer alike. `co2_model.engine` computes the
predictions on the request path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler

from co2_model import columns as col
from co2_model.engine import Columns, fast_predict, map_words
from co2_model.families import FAMILIES
from co2_model.vocabulary import (
    CO2_PER_FUEL_LITRE_G_KM,
    HYBRID_FUEL_TYPES,
    ZERO_EMISSION_FUEL_TYPES,
    normalise_fuel_mode,
    normalise_fuel_type,
    normalise_make,
)

# Fuel modes where WLTP CO2 is the fuel burnt: M mono-fuel, H hybrid that is not charged from the grid.
FUEL_BURNING_MODES = frozenset({"M", "H"})
# A plug-in hybrid's WLTP fuel consumption below this is already the utility-factor weighted
# figure; above it, it is the charge-sustaining consumption (seen in the EEA data).
PLUG_IN_WEIGHTED_FC_MAX_L_100KM = 4.5
# The thirstiest plug-in hybrids emit ~300 g/km when their battery is empty (large SUVs).
MAX_CHARGE_SUSTAINING_CO2_G_KM = 350.0
# Inputs that callers often do not have: the model also learns from copies of the training cars
# without them, so that it does not read "missing" as "unusual car". The copies keep what a caller
# knows from a car's papers (mass, engine, power, fuel, fuel consumption, eco-innovations, make).
OFTEN_MISSING_INPUTS: tuple[tuple[str, ...], ...] = (
    tuple(name for name in col.MODEL_INPUT_COLUMNS if name not in col.BASIC_INPUT_COLUMNS),
)
COPY_WEIGHT = 0.15
DIESEL_FUEL_TYPES = frozenset({"diesel", "diesel/electric"})
GAS_FUEL_TYPES = frozenset({"lpg", "ng", "ng-biomethane"})
# Fuel groups with their own slopes (mostly for the linear family).
INTERACTION_GROUPS = ("diesel", "hybrid", "plug_in", "gas")
INTERACTION_TERMS = {
    "mass": lambda f: f["mass_kg"] - 1500.0,
    "log_power": lambda f: np.log(f["engine_power_kw"]) - 4.5,
    "capacity": lambda f: f["engine_capacity_cm3"] - 1500.0,
    "log_mass": lambda f: np.log(f["mass_kg"]) - 7.2,
    "log_capacity": lambda f: np.log(f["engine_capacity_cm3"]) - 7.3,
}
# Coefficients of the EU WLTP fleet utility factor (Regulation 2017/1151, dn = 800 km).
UTILITY_FACTOR_COEFFICIENTS = (26.25, -38.94, -631.05, 5964.83, -25095, 60380.2, -87517, 75513.8, -35749, 7154.94)

NUMERIC_MODEL_FEATURES: list[str] = [
    "mass_kg",
    "log_mass",
    "engine_capacity_cm3",
    "log_capacity",
    "engine_power_kw",
    "log_power",
    "power_to_mass_kw_kg",
    "log_power_to_mass",
    "capacity_per_kw",
    "eco_innovation_savings_g_km",
    "electric_consumption_wh_km",
    "electric_range_km",
    "utility_factor",
    "fuel_share",
    "log_fuel_share",
    "plug_in_charge_sustaining_co2_g_km",
    "test_mass_kg",
    "test_mass_extra_kg",
    "wheelbase_mm",
    "track_width_mm",
    "footprint_m2",
    *(f"{group}_{term}" for group in INTERACTION_GROUPS for term in INTERACTION_TERMS),
    "plug_in_fuel_share_mass",
    "plug_in_fuel_share_power",
]
PHYSICS_CO2 = "_physics_co2_g_km"
ZERO_EMISSION = "_zero_emission"
PLUG_IN = "_plug_in"
AMBIGUOUS = "_ambiguous"
BASIC_ONLY = "_basic_only"

# How an answer was made; `ambiguous`: the inputs do not tell what kind of car it is (no answer).
ZERO_EMISSION_RULE, FUEL_CONSUMPTION, REGRESSOR, UNDECIDED = (
    "zero_emission_rule",
    "fuel_consumption",
    "regressor",
    "ambiguous",
)
METHODS: tuple[str, ...] = (ZERO_EMISSION_RULE, FUEL_CONSUMPTION, REGRESSOR, UNDECIDED)
# What the model answers per car, as columns (the registered model's output signature).
OUTPUT_COLUMNS: tuple[str, ...] = ("co2_wltp_g_km", "co2_lower_g_km", "co2_upper_g_km", "method")
INTERVAL_LEVEL = 0.9
# A (method, fuel group) needs this many calibration configurations for its own interval;
# fewer fall back to the method's interval over all fuel groups.
MIN_CALIBRATION_ROWS = 30
# The field a hybrid without fuel mode, fuel consumption or electric figures should send, and why.
AMBIGUITY_FIELD = "fuel_consumption_l_100km"
AMBIGUITY_MESSAGE = (
    "a hybrid fuel type alone does not tell a plug-in hybrid (20-60 g/km) from one that burns all its "
    "fuel (100-200 g/km): send fuel_consumption_l_100km (the WLTP combined figure), or electric_range_km "
    "or electric_consumption_wh_km, or fuel_mode (P plug-in, H not charged from the grid)"
)


def utility_factor(electric_range_km: pd.Series | np.ndarray) -> np.ndarray:
    """Share of distance a plug-in hybrid drives on electricity, by its WLTP electric range."""
    distance = np.clip(np.asarray(electric_range_km, dtype=np.float64) / 800.0, 0.0, 1.0)
    exponent = sum(c * distance ** (i + 1) for i, c in enumerate(UTILITY_FACTOR_COEFFICIENTS))
    return np.asarray(1.0 - np.exp(-exponent))


# The model computes on columns (co2_model.engine.Columns): a request's few cars skip building a
# DataFrame, which would cost more than the prediction itself.


def input_columns(cars: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The model's input columns from cars given as records (a missing or None value: not given)."""
    columns = {name: np.array([car.get(name) for car in cars], dtype=np.float64) for name in col.NUMERIC_FEATURES}
    for name in (*col.CATEGORICAL_FEATURES, col.MAKE):
        words = np.empty(len(cars), dtype=object)
        words[:] = [car.get(name) for car in cars]
        columns[name] = words
    return columns


def predict_columns(model: Any, X: Columns) -> np.ndarray:
    """The WLTP CO2 of each car in float64 (NaN where the inputs are ambiguous)."""
    return answer_columns(model, X).co2_g_km


def answer_columns(model: Any, X: Columns) -> Answers:
    """`model.predict(X)` as arrays; for a model built by `build_model`, computed on arrays throughout."""
    steps = getattr(model, "named_steps", {})
    features, regressor = steps.get("features"), steps.get("regressor")
    if len(steps) == 2 and isinstance(features, CarFeatures) and isinstance(regressor, WltpCo2Regressor):
        return regressor.answer(features.features(X))
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X)
    answered = model.predict(frame)
    return Answers(*(np.asarray(answered[name]) for name in OUTPUT_COLUMNS))


def points_of(model: Pipeline, X: Columns) -> Points:
    """A model built by `build_model`: each car's point (its prediction but the interval), computed once
    where the same cars are both calibrated on and scored."""
    return model.named_steps["regressor"].points(model.named_steps["features"].features(X))


def _among(words: np.ndarray, vocabulary: frozenset[str]) -> np.ndarray:
    """`np.isin` for words, by set lookup: a request's few words in microseconds, not tens of them."""
    return np.fromiter((word in vocabulary for word in words), dtype=bool, count=len(words))


def _or_missing(normalise: Callable[[object], str | None]) -> Callable[[object], str]:
    """A normaliser that names a value it cannot read "missing" (a category of its own)."""
    return lambda value: "missing" if (word := normalise(value)) is None else word


def _rows(X: Columns) -> int:
    if isinstance(X, pd.DataFrame):
        return len(X.index)
    return len(next(iter(X.values()))) if X else 0


def _numbers(values: Any, name: str) -> np.ndarray:
    """A column as float64, integers included; a value that is not a number is an error, not "missing"."""
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        return values
    numbers = np.asarray(pd.to_numeric(values, errors="coerce"), dtype=np.float64)
    given = ~pd.isna(np.asarray(values, dtype=object))
    if (given & np.isnan(numbers)).any():
        bad = np.asarray(values, dtype=object)[given & np.isnan(numbers)][0]
        raise ValueError(f"{name} must be a number, not {str(bad)[:40]!r}")
    return numbers


class CarFeatures(TransformerMixin, BaseEstimator):
    """Vocabulary and physics; learns each fuel's CO2 per litre from the training data."""

    def fit(self, X: pd.DataFrame, y: Any = None) -> CarFeatures:
        self.co2_per_litre_: dict[str, float] = dict(CO2_PER_FUEL_LITRE_G_KM)
        frame = self._inputs(X)
        # the 0.1 % and 99.9 % quantiles of each input: what the model has seen (a drift signal)
        self.input_ranges_: dict[str, list[float]] = {
            name: [float(frame[name].quantile(0.001)), float(frame[name].quantile(0.999))]
            for name in col.NUMERIC_FEATURES
            if frame[name].notna().any()
        }
        if y is not None:
            target = np.asarray(y, dtype=np.float64)
            usable = (
                frame["fuel_consumption_l_100km"].gt(0).to_numpy()
                & frame["fuel_mode"].isin(FUEL_BURNING_MODES).to_numpy()
                & (target > 0)
            )
            ratio = pd.Series(target / frame["fuel_consumption_l_100km"].to_numpy(), index=frame.index)[usable]
            stats = ratio.groupby(frame.loc[usable, col.FUEL_TYPE]).agg(["median", "size"])
            for fuel, row in stats.iterrows():
                if row["size"] >= 5 and fuel in self.co2_per_litre_:
                    self.co2_per_litre_[str(fuel)] = float(row["median"])
        return self

    @staticmethod
    def _columns(X: Columns) -> dict[str, np.ndarray]:
        """The inputs as arrays: numbers (0 or less means "not given"), normalised words."""
        n = _rows(X)
        columns: dict[str, np.ndarray] = {}
        for name in col.NUMERIC_FEATURES:
            values = _numbers(X[name], name) if name in X else np.full(n, np.nan)
            with np.errstate(invalid="ignore"):
                columns[name] = np.where(values > 0, values, np.nan)
        for name, normalise in (
            (col.FUEL_TYPE, normalise_fuel_type),
            ("fuel_mode", normalise_fuel_mode),
            (col.MAKE, normalise_make),
        ):
            if name in X:
                given = X[name]
                given = given.to_numpy(dtype=object) if isinstance(given, pd.Series) else given
                columns[name] = map_words(given, _or_missing(normalise))
            else:
                columns[name] = np.full(n, "missing", dtype=object)
        return columns

    @classmethod
    def _inputs(cls, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(cls._columns(X), index=X.index)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(self.features(X), index=X.index)

    def features(self, X: Columns) -> dict[str, np.ndarray]:
        """What `transform` computes, as arrays: this runs on every prediction request."""
        f = self._columns(X)
        fuel, mode = f[col.FUEL_TYPE], f["fuel_mode"]
        zero = _among(fuel, ZERO_EMISSION_FUEL_TYPES)
        with np.errstate(invalid="ignore", divide="ignore"):
            hybrid_fuel = _among(fuel, HYBRID_FUEL_TYPES)
            # The EEA's hybrid fuel types are cars charged from the grid unless the mode says H.
            plug_in = ((mode == "P") | (f["electric_range_km"] > 0) | (hybrid_fuel & (mode != "H"))) & ~zero
            diesel = _among(fuel, DIESEL_FUEL_TYPES)
            factor = map_words(fuel, lambda word: self.co2_per_litre_.get(word, np.nan), np.float64)
            fallback = np.where(diesel, self.co2_per_litre_["diesel"], self.co2_per_litre_["petrol"])
            factor = np.where(np.isnan(factor), fallback, factor)
            fc = f["fuel_consumption_l_100km"]
            range_km = np.nan_to_num(f["electric_range_km"], nan=0.0)
            share = np.where(plug_in, 1.0 - utility_factor(range_km), 1.0)
            mass, power = f["mass_kg"], f["engine_power_kw"]

            out: dict[str, np.ndarray] = {name: f[name] for name in col.NUMERIC_FEATURES}
            out.update({name: f[name] for name in (col.FUEL_TYPE, "fuel_mode", col.MAKE)})
            out["log_mass"] = np.log(mass)
            out["log_capacity"] = np.log(f["engine_capacity_cm3"])
            out["log_power"] = np.log(power)
            out["power_to_mass_kw_kg"] = power / mass
            out["log_power_to_mass"] = np.log(out["power_to_mass_kw_kg"])
            out["capacity_per_kw"] = f["engine_capacity_cm3"] / power
            out["utility_factor"] = 1.0 - share
            out["fuel_share"] = share
            out["log_fuel_share"] = np.log(np.clip(share, 0.02, None))
            charge_sustaining = plug_in & (fc >= PLUG_IN_WEIGHTED_FC_MAX_L_100KM)
            out["plug_in_charge_sustaining_co2_g_km"] = np.where(charge_sustaining, share * factor * fc, np.nan)
            out["test_mass_extra_kg"] = f["test_mass_kg"] - mass
            out["footprint_m2"] = f["wheelbase_mm"] * f["track_width_mm"] / 1e6
            groups = {
                "diesel": diesel & ~plug_in,
                "hybrid": (mode == "H") & ~plug_in,
                "plug_in": plug_in,
                "gas": _among(fuel, GAS_FUEL_TYPES),
            }
            for group, member in groups.items():
                for term, compute in INTERACTION_TERMS.items():
                    out[f"{group}_{term}"] = compute(f) * member
            out["plug_in_fuel_share_mass"] = share * mass * plug_in
            out["plug_in_fuel_share_power"] = share * power * plug_in

            # An unstated fuel mode of a single-fuel type means the car burns that fuel.
            stated_or_single = _among(mode, FUEL_BURNING_MODES) | (
                (mode == "missing") & ~_among(fuel, HYBRID_FUEL_TYPES)
            )
            burns_fuel = (stated_or_single & ~plug_in) | (plug_in & (fc < PLUG_IN_WEIGHTED_FC_MAX_L_100KM))
            out[PHYSICS_CO2] = np.where(burns_fuel & ~zero, factor * fc, np.nan)
            out[ZERO_EMISSION] = zero.astype(np.float64)
            out[PLUG_IN] = plug_in.astype(np.float64)
            # Only what a car's papers say (mass, engine, power, fuel, consumption, make): less to go on.
            extra = [name for name in col.NUMERIC_FEATURES if name not in col.BASIC_INPUT_COLUMNS]
            out[BASIC_ONLY] = ((mode == "missing") & np.all([np.isnan(f[name]) for name in extra], axis=0)).astype(
                np.float64
            )
            out[AMBIGUOUS] = (
                hybrid_fuel
                & (mode == "missing")
                & np.isnan(fc)
                & np.isnan(f["electric_range_km"])
                & np.isnan(f["electric_consumption_wh_km"])
            ).astype(np.float64)
        return out


class WltpCo2Regressor(RegressorMixin, BaseEstimator):
    """0 g/km for zero-emission cars, fuel x carbon where that is the WLTP figure, the regressor otherwise.

    The regressor learns from every car that emits (so that it also knows cars whose fuel
    consumption is missing); `log_target` fits log CO2, which suits the linear family.
    """

    def __init__(
        self,
        regressor: Any = None,
        log_target: bool = False,
        physics_tolerance_below: float = 0.12,
        physics_tolerance_above: float = 0.5,
    ) -> None:
        self.regressor = regressor
        self.log_target = log_target
        self.physics_tolerance_below = physics_tolerance_below
        self.physics_tolerance_above = physics_tolerance_above

    def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> WltpCo2Regressor:
        emits = X[ZERO_EMISSION].to_numpy() == 0
        if not emits.any():
            raise ValueError("every training car is zero-emission: nothing for the regressor to learn")
        target = np.asarray(y, dtype=np.float64)[emits]
        if self.log_target:
            target = np.log(np.maximum(target, 1.0))
        self.regressor_ = clone(self.regressor)
        params: dict[str, Any] = {}
        if sample_weight is not None:
            last = self.regressor_.steps[-1][0]
            params[f"{last}__sample_weight"] = np.asarray(sample_weight, dtype=np.float64)[emits]
        self.regressor_.fit(X[emits], target, **params)
        return self

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per car: WLTP CO2, its 90 % interval and the method (`OUTPUT_COLUMNS`), as MLflow clients get it."""
        return self.answer({name: X[name].to_numpy() for name in X.columns}).frame(X.index)

    def answer(self, features: Mapping[str, np.ndarray]) -> Answers:
        """Rule, fuel consumption or regressor for each car, with the interval calibrated for that way."""
        return self.answer_points(self.points(features))

    def points(self, features: Mapping[str, np.ndarray]) -> Points:
        """Each car's CO2, the way it was made and its fuel group: what its interval depends on."""
        co2, method = self._point(features)
        return Points(co2, method, fuel_groups(features))

    def answer_points(self, points: Points) -> Answers:
        """The answers for cars whose points are known, with the intervals as calibrated now."""
        half_width = self._half_widths(points.method, points.groups)
        co2 = points.co2_g_km
        return Answers(co2, np.maximum(co2 - half_width, 0.0), co2 + half_width, points.method)

    def _point(self, features: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        emits = features[ZERO_EMISSION] == 0
        out = np.zeros(len(emits), dtype=np.float64)
        if emits.any():
            emitting = features if emits.all() else {name: values[emits] for name, values in features.items()}
            predicted = fast_predict(self.regressor_, emitting)
            out[emits] = np.maximum(np.exp(predicted) if self.log_target else predicted, 0.0)
        physics = np.asarray(features[PHYSICS_CO2], dtype=np.float64)
        # Fuel x carbon is exact when the fuel consumption is a WLTP figure. A figure on another
        # basis (some registrations carry NEDC values, ~20 % lower) shows as a gap below the
        # regressor's estimate; the band is asymmetric for that reason (tuned on the 2021 data).
        with np.errstate(invalid="ignore"):
            agrees = (physics >= out * (1 - self.physics_tolerance_below)) & (
                physics <= out * (1 + self.physics_tolerance_above)
            )
        # A plug-in's weighted fuel consumption is the only figure that knows how much it drives
        # on electricity: the regressor cannot second-guess it.
        plug_in = np.asarray(features[PLUG_IN]) == 1
        use_physics = emits & ~np.isnan(physics) & (agrees | plug_in)
        out[use_physics] = physics[use_physics]
        method = np.where(~emits, ZERO_EMISSION_RULE, np.where(use_physics, FUEL_CONSUMPTION, REGRESSOR)).astype(object)
        ambiguous = np.asarray(features[AMBIGUOUS]) == 1
        if ambiguous.any():
            out[ambiguous] = np.nan
            method[ambiguous] = UNDECIDED
        return out, method

    def calibrate_points(self, points: Points, y: Any, sample_weight: Any = None) -> WltpCo2Regressor:
        """Split-conformal intervals from held-out cars' points (`points`): per (method, fuel group), the
        absolute error that `INTERVAL_LEVEL` of them stay within (weighted per car); a group with few
        cars takes its method's."""
        co2, method, groups = points.co2_g_km, points.method, points.groups
        error = np.abs(np.asarray(y, dtype=np.float64) - co2)
        weights = np.ones(len(error)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        widths: dict[str, float] = {ZERO_EMISSION_RULE: 0.0}
        answered = ~np.isnan(error) & (method != ZERO_EMISSION_RULE)
        if answered.any():
            widths[""] = _conformal_quantile(error[answered], weights[answered])
        for how in (FUEL_CONSUMPTION, REGRESSOR):
            of_method = answered & (method == how)
            if of_method.sum() >= MIN_CALIBRATION_ROWS:
                widths[how] = _conformal_quantile(error[of_method], weights[of_method])
            for group in np.unique(groups[of_method]):
                member = of_method & (groups == group)
                if member.sum() >= MIN_CALIBRATION_ROWS:
                    widths[f"{how}/{group}"] = _conformal_quantile(error[member], weights[member])
        self.interval_half_widths_g_km_ = widths
        return self

    def _half_widths(self, method: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Each car's interval half-width: its (method, group)'s, else its method's, else the overall one."""
        widths: dict[str, float] = getattr(self, "interval_half_widths_g_km_", {ZERO_EMISSION_RULE: 0.0})
        overall = widths.get("", np.nan)
        return np.array(
            [
                widths.get(f"{how}/{group}", widths.get(how, overall))
                for how, group in zip(method.tolist(), groups.tolist(), strict=True)
            ],
            dtype=np.float64,
        )


@dataclass(frozen=True)
class Points:
    """What the model says of each car before its interval: CO2, method (`METHODS`), fuel group."""

    co2_g_km: np.ndarray
    method: np.ndarray
    groups: np.ndarray

    def take(self, rows: np.ndarray) -> Points:
        return Points(self.co2_g_km[rows], self.method[rows], self.groups[rows])

    @classmethod
    def joined(cls, *parts: Points) -> Points:
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("co2_g_km", "method", "groups")))


@dataclass(frozen=True)
class Answers:
    """What the model says of each car: CO2, its interval, and which way it was made (`METHODS`)."""

    co2_g_km: np.ndarray
    lower_g_km: np.ndarray
    upper_g_km: np.ndarray
    method: np.ndarray

    def frame(self, index: Any = None) -> pd.DataFrame:
        values = (self.co2_g_km, self.lower_g_km, self.upper_g_km, self.method)
        return pd.DataFrame(dict(zip(OUTPUT_COLUMNS, values, strict=True)), index=index)


def fuel_groups(features: Mapping[str, np.ndarray]) -> np.ndarray:
    """The group each car's interval is calibrated in (its error scale differs by group): the fuel
    group, and `/basic` where only what a car's papers say was given."""
    fuel, mode = features[col.FUEL_TYPE], features["fuel_mode"]
    groups = np.full(len(fuel), "petrol", dtype=object)
    groups[_among(fuel, DIESEL_FUEL_TYPES)] = "diesel"
    groups[_among(fuel, GAS_FUEL_TYPES)] = "gas"
    groups[mode == "H"] = "hybrid"
    groups[np.asarray(features[PLUG_IN]) == 1] = "plug_in"
    groups[np.asarray(features[ZERO_EMISSION]) == 1] = "zero_emission"
    basic = np.asarray(features[BASIC_ONLY]) == 1
    groups[basic] = groups[basic] + "/basic"
    return groups


def _conformal_quantile(errors: np.ndarray, weights: np.ndarray) -> float:
    """The error that `INTERVAL_LEVEL` of the weight lies at or below, with split-conformal's
    finite-sample correction (level x (1 + 1/n)) so that new cars are covered at least `level`."""
    level = min(1.0, INTERVAL_LEVEL * (1.0 + 1.0 / len(errors)))
    return float(np.quantile(errors, level, weights=weights, method="inverted_cdf"))


def supports_sample_weight(family: str) -> bool:
    """KNN cannot weigh training points; it sees each configuration once."""
    return family != "knn"


# Rows per leaf of the random forest grow with the data, so that a full year (~100k
# configurations) trains in minutes and in bounded memory instead of growing ~10^5 leaves a tree.
ROWS_PER_UNIT_LEAF = 20_000
# Above this many configurations each tree learns from a bootstrap sample of about this many: on a
# generated full year (88k configurations, bench/full_year.py) the forest's training task takes 110 s
# instead of 369 s, at a test MAE with the make of 2.62 against 2.57 g/km. Smaller windows, like the
# sample, grow every tree on all of them.
CONFIGURATIONS_PER_TREE = 25_000
# Trees of the forest. Every prediction walks each tree, so they are what a request waits for. On the
# sample's test split, over six seeds, 50 trees score as 100 do (MAE with the make 2.370 +- 0.033
# against 2.362 +- 0.028 g/km, without it 2.407 +- 0.028 against 2.404 +- 0.014) in half the time.
FOREST_TREES = 50


def build_model(family: str, with_make: bool, seed: int = 42, train_rows: int = 0) -> Pipeline:
    """One candidate: the shared features and preprocessing, then the family's regressor."""
    numeric_steps: list[Any] = [SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()]
    log_target = False
    regressor: Any
    if family == "random_forest":
        subsample = train_rows > CONFIGURATIONS_PER_TREE
        regressor = RandomForestRegressor(
            n_estimators=FOREST_TREES,
            max_features=0.5,
            bootstrap=subsample,
            max_samples=CONFIGURATIONS_PER_TREE / train_rows if subsample else None,
            min_samples_leaf=max(1, train_rows // ROWS_PER_UNIT_LEAF),
            n_jobs=-1,  # every core; predictions do not use it (co2_model.engine walks the trees itself)
            random_state=seed,
        )
    elif family == "linear_regression":
        # Least squares with a light ridge penalty, on splines of the features, fitting log CO2.
        regressor = Ridge(alpha=1.0)
        numeric_steps.append(SplineTransformer(n_knots=6, degree=3, extrapolation="linear"))
        log_target = True
    elif family == "knn":
        # Euclidean distances are matrix products (BLAS): on a year's test split ten times faster than
        # Manhattan's, and as accurate (MAE 2.39 against 2.43 g/km on a generated full year)
        regressor = KNeighborsRegressor(n_neighbors=4, weights="distance", metric="euclidean")
    else:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    categorical = [col.FUEL_TYPE, "fuel_mode", *([col.MAKE] if with_make else [])]
    encode = ColumnTransformer(
        [
            ("numeric", make_pipeline(*numeric_steps), NUMERIC_MODEL_FEATURES),
            # 0/1 and unscaled: a missing value should not weigh like seven standard deviations
            ("missing", MissingIndicator(features="all"), NUMERIC_MODEL_FEATURES),
            (
                "categorical",
                OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=3, sparse_output=False),
                categorical,
            ),
        ]
    )
    inner = Pipeline([("encode", encode), ("regressor", regressor)])
    return Pipeline([("features", CarFeatures()), ("regressor", WltpCo2Regressor(inner, log_target=log_target))])


def fit(model: Pipeline, X: pd.DataFrame, y: Any, registrations: Any | None) -> Pipeline:
    """Fit a candidate, each configuration weighted by its registrations where the family can,
    on the training cars plus copies of them without the inputs callers often lack."""
    views = [X]
    for missing in OFTEN_MISSING_INPUTS:
        without = X.copy()
        for name in missing:
            without[name] = np.nan if name in col.NUMERIC_FEATURES else None
        views.append(without)
    X_all = pd.concat(views, ignore_index=True)
    y_all = np.concatenate([np.asarray(y, dtype=np.float64)] * len(views))
    params = {}
    if registrations is not None:
        weights = np.asarray(registrations, dtype=np.float64)
        copies = [COPY_WEIGHT * weights] * len(OFTEN_MISSING_INPUTS)
        params["regressor__sample_weight"] = np.concatenate([weights, *copies])
    return model.fit(X_all, y_all, **params)
