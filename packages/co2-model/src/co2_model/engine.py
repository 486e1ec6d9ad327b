"""The inference engine: a fitted scikit-learn pipeline's prediction computed from its fitted
parameters, for the shapes `co2_model.model.build_model` builds.

Written by hand because it is faster where people wait: a prediction request carries one car, and
scikit-learn's per-call validation, pandas handling and per-tree dispatch cost ~10 ms against
~0.5 ms of arithmetic. Each function falls back to scikit-learn (returns None, or calls it) for any
shape it does not know; tests prove the numbers equal scikit-learn's.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler

# Some cars' features by column name: a DataFrame, or a dict of equally long arrays.
Columns = pd.DataFrame | Mapping[str, Any]

# From this many cars on, a column of words is mapped once per distinct word: a batch holds a few
# distinct fuel types and makes, and hashing them in pandas' compiled code is cheaper than a Python
# call per car; fewer cars (a single-car request's batch) are mapped one by one, which is cheaper
# than setting up the hashing.
DISTINCT_WORDS_MIN_ROWS = 64


def map_words(words: np.ndarray, function: Callable[[Any], Any], dtype: Any = object) -> np.ndarray:
    """`function` of each word of a column (None and NaN alike: missing), as an array of `dtype`."""
    if len(words) < DISTINCT_WORDS_MIN_ROWS:
        mapped = np.empty(len(words), dtype=dtype)
        mapped[:] = [function(word) for word in words]
        return mapped
    codes, distinct = pd.factorize(np.asarray(words, dtype=object), use_na_sentinel=False)
    per_word = np.empty(len(distinct), dtype=dtype)
    per_word[:] = [function(word) for word in distinct]
    return per_word[codes]


def fast_predict(pipeline: Pipeline, X: Columns) -> np.ndarray:
    """`pipeline.predict(X)` without scikit-learn's per-call overhead, where its shape allows.

    A prediction request carries one car: then the validation, pandas handling and per-tree
    dispatch of the generic path cost ~10 ms against ~0.5 ms of arithmetic. For the encoder and
    regressors built by `build_model` this computes the same numbers directly from the fitted
    parameters; any other shape takes the generic path.
    """
    encode, regressor = pipeline.named_steps["encode"], pipeline.named_steps["regressor"]
    if isinstance(X, pd.DataFrame):
        X = {name: X[name].to_numpy() for name in X.columns}
    encoded = _fast_encode(encode, X)
    if encoded is None:
        return np.asarray(pipeline.predict(pd.DataFrame(X)), dtype=np.float64)
    if isinstance(regressor, RandomForestRegressor):
        rows = np.ascontiguousarray(encoded, dtype=np.float32)  # what the trees were grown on
        trees = _forest_leaves(regressor)
        if len(rows) < PARALLEL_MIN_ROWS or _TREE_THREADS == 1:
            return _sum_trees(trees, rows) / len(trees)
        # The walk down the trees is compiled code that releases the interpreter lock: a large
        # batch is split by trees among threads.
        shares = [trees[i::_TREE_THREADS] for i in range(_TREE_THREADS)]
        return np.sum(list(_tree_pool().map(_sum_trees, shares, [rows] * len(shares))), axis=0) / len(trees)
    return np.asarray(regressor.predict(encoded), dtype=np.float64)


PARALLEL_MIN_ROWS = 200
_TREE_THREADS = min(4, os.cpu_count() or 1)


@cache
def _tree_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_TREE_THREADS, thread_name_prefix="co2-trees")


def _sum_trees(trees: list[tuple[Any, np.ndarray]], rows: np.ndarray) -> np.ndarray:
    total = np.zeros(len(rows), dtype=np.float64)
    for tree, node_values in trees:
        total += node_values[tree.apply(rows)]
    return total


_FOREST_LEAVES: weakref.WeakKeyDictionary[RandomForestRegressor, list[tuple[Any, np.ndarray]]] = (
    weakref.WeakKeyDictionary()
)


def _forest_leaves(forest: RandomForestRegressor) -> list[tuple[Any, np.ndarray]]:
    """Each tree with the value of its nodes: `value[apply(X)]` is `tree.predict(X)` without its checks."""
    cached = _FOREST_LEAVES.get(forest)
    if cached is None:
        cached = [(e.tree_, np.ascontiguousarray(e.tree_.value[:, 0, 0])) for e in forest.estimators_]
        _FOREST_LEAVES[forest] = cached
    return cached


def _fast_encode(encode: ColumnTransformer, X: Mapping[str, np.ndarray]) -> np.ndarray | None:
    blocks: list[np.ndarray] = []
    for name, transformer, columns in encode.transformers_:
        if name == "remainder":
            if transformer == "drop":
                continue
            return None
        if isinstance(transformer, OneHotEncoder):
            blocks.append(_one_hot(transformer, np.column_stack([np.asarray(X[c], dtype=object) for c in columns])))
            continue
        values = np.column_stack([np.asarray(X[c], dtype=np.float64) for c in columns])
        if isinstance(transformer, MissingIndicator) and transformer.features == "all":
            blocks.append(np.isnan(values).astype(np.float64))
            continue
        steps = [step for _, step in transformer.steps] if isinstance(transformer, Pipeline) else [transformer]
        for step in steps:
            if isinstance(step, SimpleImputer) and not step.add_indicator:
                fill = np.nan_to_num(step.statistics_, nan=0.0)  # keep_empty_features imputes 0
                values = np.where(np.isnan(values), fill, values)
            elif isinstance(step, StandardScaler) and step.with_mean and step.with_std:
                values = (values - step.mean_) / step.scale_
            elif isinstance(step, SplineTransformer) and (splined := _splines(step, values)) is not None:
                values = splined
            else:
                return None
        blocks.append(values)
    return np.hstack(blocks)


@dataclass(frozen=True)
class _SplineLayout:
    """A fitted SplineTransformer's knots and boundary values, per feature, as arrays."""

    knots: np.ndarray  # (features, knots)
    low: np.ndarray  # (features,) the first and last inner knot: the fitted range
    high: np.ndarray
    at_low: np.ndarray  # (features, degree) the first bases' value and slope at `low`
    slope_low: np.ndarray
    at_high: np.ndarray  # (features, degree) the last bases' value and slope at `high`
    slope_high: np.ndarray


_SPLINE_LAYOUTS: weakref.WeakKeyDictionary[SplineTransformer, _SplineLayout] = weakref.WeakKeyDictionary()


def _splines(step: SplineTransformer, values: np.ndarray) -> np.ndarray | None:
    """SplineTransformer(extrapolation="linear").transform for all features at once (Cox-de Boor).

    scikit-learn evaluates one scipy BSpline per feature, ~0.2 ms each whatever the rows; this
    evaluates the few bases that are non-zero at each value, for every feature together.
    """
    degree = step.degree
    if step.extrapolation != "linear" or step.sparse_output or not step.include_bias or degree < 2:
        return None
    if getattr(step, "handle_missing", "error") != "zeros" and np.isnan(values).any():
        return None  # scikit-learn's own error
    layout = _SPLINE_LAYOUTS.get(step)
    if layout is None:
        splines = step.bsplines_
        low = np.array([s.t[degree] for s in splines])
        high = np.array([s.t[-degree - 1] for s in splines])
        layout = _SPLINE_LAYOUTS[step] = _SplineLayout(
            knots=np.array([s.t for s in splines]),
            low=low,
            high=high,
            at_low=np.array([s(a)[:degree] for s, a in zip(splines, low, strict=True)]),
            slope_low=np.array([s(a, nu=1)[:degree] for s, a in zip(splines, low, strict=True)]),
            at_high=np.array([s(b)[-degree:] for s, b in zip(splines, high, strict=True)]),
            slope_high=np.array([s(b, nu=1)[-degree:] for s, b in zip(splines, high, strict=True)]),
        )
    rows, features = values.shape
    knots = layout.knots
    bases = knots.shape[1] - degree - 1
    inside = (values >= layout.low) & (values <= layout.high)  # NaN is neither: all bases 0
    x = np.where(inside, values, layout.low)
    # the knot interval of each value: t[i] <= x < t[i + 1], the last interval closed
    interval = (knots[None, :, :] <= x[:, :, None]).sum(axis=2) - 1
    interval = np.clip(interval, degree, bases - 1)

    def knot(offset: int) -> np.ndarray:
        return np.take_along_axis(knots[None, :, :], (interval + offset)[:, :, None], axis=2)[:, :, 0]

    # basis[r] is basis number interval - degree + r; built up degree by degree (The NURBS Book, A2.2)
    basis = [np.ones_like(x)]
    left = [np.zeros_like(x)]
    right = [np.zeros_like(x)]
    for j in range(1, degree + 1):
        left.append(x - knot(1 - j))
        right.append(knot(j) - x)
        saved = np.zeros_like(x)
        for r in range(j):
            temp = basis[r] / (right[r + 1] + left[j - r])
            basis[r] = saved + right[r + 1] * temp
            saved = left[j - r] * temp
        basis.append(saved)
    out = np.zeros((rows, features, bases))
    row_index, feature_index = np.nonzero(inside)
    first = interval[inside] - degree
    for r in range(degree + 1):
        out[row_index, feature_index, first + r] = basis[r][inside]
    # beyond the fitted range the first (last) `degree` bases continue along their tangent
    below = np.where(values < layout.low, values - layout.low, np.nan)
    above = np.where(values > layout.high, values - layout.high, np.nan)
    extend_low = layout.at_low + below[:, :, None] * layout.slope_low
    extend_high = layout.at_high + above[:, :, None] * layout.slope_high
    out[:, :, :degree] = np.where(np.isnan(extend_low), out[:, :, :degree], extend_low)
    out[:, :, bases - degree :] = np.where(np.isnan(extend_high), out[:, :, bases - degree :], extend_high)
    return out.reshape(rows, features * bases)


# Per fitted encoder: its output width, and per feature the output column of each category
# (None: no column) with the column where unknown values go.
OneHotLayout = tuple[int, list[tuple[dict[object, int | None], int | None]]]
_ONE_HOT_LAYOUTS: weakref.WeakKeyDictionary[OneHotEncoder, OneHotLayout] = weakref.WeakKeyDictionary()


def _one_hot(encoder: OneHotEncoder, values: np.ndarray) -> np.ndarray:
    """OneHotEncoder(handle_unknown="infrequent_if_exist").transform by lookup: each feature's
    frequent categories in order, then its infrequent column (also where unknown values go)."""
    cached = _ONE_HOT_LAYOUTS.get(encoder)
    if cached is None:
        layout: list[tuple[dict[object, int | None], int | None]] = []
        offset = 0
        infrequent = getattr(encoder, "infrequent_categories_", [None] * len(encoder.categories_))
        for categories, rare in zip(encoder.categories_, infrequent, strict=True):
            rare_set = set() if rare is None else set(rare.tolist())
            frequent = [c for c in categories.tolist() if c not in rare_set]
            columns: dict[object, int | None] = {c: offset + i for i, c in enumerate(frequent)}
            rare_column = offset + len(frequent) if rare_set else None
            columns.update(dict.fromkeys(rare_set, rare_column))
            layout.append((columns, rare_column))
            offset += len(frequent) + (1 if rare_set else 0)
        cached = _ONE_HOT_LAYOUTS[encoder] = (offset, layout)
    width, layout = cached
    out = np.zeros((len(values), width), dtype=np.float64)
    rows = np.arange(len(values))
    for feature, (columns, rare_column) in enumerate(layout):
        column = map_words(values[:, feature], _column_of(columns, rare_column), np.intp)
        known = column >= 0  # the encoder has a column for this value
        out[rows[known], column[known]] = 1.0
    return out


def _column_of(columns: dict[object, int | None], unknown: int | None) -> Callable[[object], int]:
    """A value's output column (-1: none), unknown values in `unknown`'s."""
    return lambda value: -1 if (column := columns.get(value, unknown)) is None else column
