"""How the training experiment presents itself in MLflow's UI: a model-training experiment, candidates by MAE.

MLflow 3 opens experiments in its GenAI view (traces, tokens, cost) unless told otherwise, and its runs
table shows no metric columns by default. The experiment says what it is with the tag MLflow's own
experiment-type selector writes (`mlflow.experimentKind` = `custom_model_development`), and carries a
saved view of the runs table (the `mlflow.sharedViewState.<id>` tag that the UI's "Views" menu saves)
with MAE, RMSE and R² as columns, best MAE first. MLflow 3.17's UI picks the view from its sidebar
switch "GenAI / Model training" (remembered per browser, GenAI at first) rather than from the tag: the
link `runs_page_url` gives opens the model-training view on the saved view whatever the browser remembers.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any
from urllib.parse import urlencode

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
SAVED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
CANDIDATES_VIEW = "candidates"
# Decimals worth reading, in MLflow and in the logs: g/km to the milligram (the data are whole g/km),
# R² to four places. Rankings and promotion decisions use the unrounded figures.
VIEW_METRICS = {"mae_g_km": 3, "rmse_g_km": 3, "r2": 4}
METRIC_DECIMALS = {**VIEW_METRICS, **{f"backtest_{name}": decimals for name, decimals in VIEW_METRICS.items()}}
# what the runs table shows in the saved view: the test split's metrics, and what tells the candidates apart
VIEW_PARAMS = ("family", "with_make", "train_rows")


def rounded(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics as they are shown and logged: each to its meaningful decimals (others to two)."""
    return {name: round(float(value), METRIC_DECIMALS.get(name, 2)) for name, value in metrics.items()}


def _column(group: str, key: str) -> str:
    return f"{group}.`{key}`"  # the runs table's column ids


def candidates_view() -> dict[str, Any]:
    """The saved view, in the envelope the UI stores: a name, times in ms, and the table's state as JSON."""
    state = {
        "selectedColumns": [
            *(_column("metrics", m) for m in VIEW_METRICS),
            *(_column("params", p) for p in VIEW_PARAMS),
            _column("attributes", "Models"),
        ],
        "orderByKey": _column("metrics", "mae_g_km"),
        "orderByAsc": True,
    }
    now_ms = int(time.time() * 1000)
    return {"name": "Candidates by MAE", "createdAt": now_ms, "updatedAt": now_ms, "state": json.dumps(state)}


def prepare_experiment(client: Any, name: str) -> str:
    """The experiment's id, created if needed, tagged as model training with the candidates' view (idempotent)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        with contextlib.suppress(MlflowException):  # the training tasks run in parallel: one creates it
            client.create_experiment(name)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise RuntimeError(f"MLflow neither has nor creates the experiment {name!r}")
    experiment_id = str(experiment.experiment_id)
    tags = experiment.tags or {}
    if tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    view_tag = SAVED_VIEW_TAG_PREFIX + CANDIDATES_VIEW
    stored = tags.get(view_tag)
    if stored is None or json.loads(stored).get("state") != candidates_view()["state"]:
        client.set_experiment_tag(experiment_id, view_tag, json.dumps(candidates_view()))
    return experiment_id


def runs_page_url(tracking_uri: str, experiment_id: str) -> str:
    """The experiment's runs in the model-training view, with the candidates' metrics as columns."""
    query = urlencode({"workflowType": "machine_learning", "viewStateShareKey": CANDIDATES_VIEW})
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"
