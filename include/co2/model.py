"""The model: scikit-learn pipelines that every MLflow client can load and that know the rules.

The registered object is a `ZeroEmissionRegressor`: battery-electric and hydrogen cars get
0 g/km by definition, every other car goes to a Pipeline of
`CarFeatures` (vocabulary, physics) -> imputation with missing indicators -> scaling / one-hot
-> one of three regressor families. Because the rule and the feature code live inside the model
(shipped with it as code), `mlflow models serve` and the prediction service answer alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from co2 import columns as col
from co2.vocabulary import (
    CO2_PER_FUEL_LITRE_G_KM,
    HYBRID_FUEL_TYPES,
    normalise_fuel_types,
    normalise_makes,
)

FAMILIES: tuple[str, ...] = ("random_forest", "linear_regression", "knn")

# Derived by CarFeatures from the inputs; physics first: for a combustion car CO2 is fuel burnt
# times the fuel's carbon, for a plug-in hybrid it falls with the electric range.
DERIVED_FEATURES: list[str] = [
    "co2_from_fuel_g_km",
    "power_to_mass_kw_per_t",
    "log_mass_kg",
    "log_engine_capacity_cm3",
    "inverse_electric_range_per_km",
]


class CarFeatures(TransformerMixin, BaseEstimator):
    """Normalise the vocabulary and add physics features; missing input columns become missing values."""

    def fit(self, X: pd.DataFrame, y: Any = None) -> CarFeatures:
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        frame = pd.DataFrame(index=X.index)
        for name in col.NUMERIC_FEATURES:
            frame[name] = pd.to_numeric(X[name], errors="coerce").astype("float64") if name in X else np.nan
        fuel_type = normalise_fuel_types(X[col.FUEL_TYPE]) if col.FUEL_TYPE in X else pd.Series(pd.NA, index=X.index)
        frame[col.FUEL_TYPE] = fuel_type.astype(object).where(fuel_type.notna(), "missing")
        fuel_mode = X["fuel_mode"].astype("string").str.strip().str.upper() if "fuel_mode" in X else pd.Series(pd.NA, index=X.index)
        frame["fuel_mode"] = fuel_mode.astype(object).where(fuel_mode.notna(), "missing")
        make = normalise_makes(X[col.MAKE]) if col.MAKE in X else pd.Series(pd.NA, index=X.index, dtype="string")
        frame[col.MAKE] = make.astype(object).where(make.notna(), "missing")

        factor = fuel_type.map(CO2_PER_FUEL_LITRE_G_KM).astype("float64")
        frame["co2_from_fuel_g_km"] = frame["fuel_consumption_l_100km"] * factor
        frame["power_to_mass_kw_per_t"] = frame["engine_power_kw"] / frame["mass_kg"] * 1000.0
        frame["log_mass_kg"] = np.log(frame["mass_kg"].clip(lower=1.0))
        frame["log_engine_capacity_cm3"] = np.log1p(frame["engine_capacity_cm3"].clip(lower=0.0))
        hybrid = fuel_type.isin(HYBRID_FUEL_TYPES).fillna(False).to_numpy(dtype=bool)
        frame["inverse_electric_range_per_km"] = np.where(hybrid, 1.0 / frame["electric_range_km"].clip(lower=1.0), 0.0)
        return frame

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.array([*col.NUMERIC_FEATURES, col.FUEL_TYPE, "fuel_mode", col.MAKE, *DERIVED_FEATURES], dtype=object)


class ZeroEmissionRegressor(RegressorMixin, BaseEstimator):
    """0 g/km for zero-emission fuel types by definition; the wrapped regressor for the rest."""

    def __init__(self, regressor: Any = None, zero_emission_fuel_types: tuple[str, ...] = ("electric", "hydrogen")):
        self.regressor = regressor
        self.zero_emission_fuel_types = zero_emission_fuel_types

    def _zero(self, X: pd.DataFrame) -> np.ndarray:
        fuel = normalise_fuel_types(X[col.FUEL_TYPE])
        return fuel.isin(list(self.zero_emission_fuel_types)).fillna(False).to_numpy(dtype=bool)

    def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> ZeroEmissionRegressor:
        zero = self._zero(X)
        if zero.all():
            raise ValueError("every training car is zero-emission: nothing for the regressor to learn")
        self.regressor_ = clone(self.regressor)
        fit_params: dict[str, Any] = {}
        if sample_weight is not None:
            last_step = self.regressor_.steps[-1][0] if isinstance(self.regressor_, Pipeline) else None
            key = f"{last_step}__sample_weight" if last_step else "sample_weight"
            fit_params[key] = np.asarray(sample_weight)[~zero]
        self.regressor_.fit(X[~zero], np.asarray(y)[~zero], **fit_params)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        X = _as_frame(X)
        zero = self._zero(X)
        out = np.zeros(len(X), dtype=np.float64)
        if (~zero).any():
            out[~zero] = np.clip(self.regressor_.predict(X[~zero]), 0.0, None)
        return out


def _as_frame(X: Any) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    return pd.DataFrame(X, columns=col.MODEL_INPUT_COLUMNS[: np.shape(X)[1]])


def supports_sample_weight(family: str) -> bool:
    """KNN cannot weigh training points; it sees each configuration once."""
    return family != "knn"


def build_model(family: str, with_make: bool, seed: int = 42) -> ZeroEmissionRegressor:
    """One candidate: the shared features and preprocessing, then the family's regressor."""
    numeric = [*col.NUMERIC_FEATURES, *DERIVED_FEATURES]
    categorical = [col.FUEL_TYPE, "fuel_mode", *([col.MAKE] if with_make else [])]
    encode = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True), StandardScaler()), numeric),
            ("categorical", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=3, sparse_output=False), categorical),
        ],
        verbose_feature_names_out=False,
    )
    regressor: Any
    if family == "random_forest":
        regressor = RandomForestRegressor(n_estimators=200, max_features=0.5, min_samples_leaf=1, n_jobs=1, random_state=seed)
    elif family == "linear_regression":
        regressor = LinearRegression()
    elif family == "knn":
        regressor = KNeighborsRegressor(n_neighbors=5, weights="distance")
    else:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    pipeline = Pipeline([("features", CarFeatures()), ("encode", encode), ("regressor", regressor)])
    return ZeroEmissionRegressor(pipeline)
