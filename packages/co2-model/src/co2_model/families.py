"""The model families, declared once: the DAG builds one training task per family from this tuple, and
each family is trained with and without the make (co2_model.model.build_model)."""

from __future__ import annotations

FAMILIES: tuple[str, ...] = ("random_forest", "linear_regression", "knn")
