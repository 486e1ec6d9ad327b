"""Step 4: train one model family, with and without the make, and log each candidate to MLflow.

Every candidate is scored on the same test split and logged with its parameters, metrics,
signature, input example, the lineage of its data (sha256 of raw and processed files) and the
model code it needs, so that any MLflow client can load it.

When the window holds more than one registration year, each candidate is also backtested: the same
family fit on the window without its newest year, scored on that year's test cars (`backtest_*`).
That is how much a model ages in a year, the reason the platform retrains. Metrics are logged to the precision
that means something (a thousandth of a g/km, four decimals of R²); the ranking uses them unrounded.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from co2.evaluation import calibrate_and_score, calibration_rows, evaluate, score_predictions
from co2.experiment import prepare_experiment, rounded
from co2.files import read_json, write_parquet
from co2.logs import get_logger, printed_as_info, route_mlflow_logging
from co2.mlflow_utils import log_model, mlflow_client, model_code_run_tags
from co2.pipeline.preprocess import aggregate
from co2.pipeline.results import Candidate
from co2.settings import Settings
from co2.tags import (
    FAMILY_TAG,
    RAW_SHA256_TAG,
    TEST_SHA256_TAG,
    TRAIN_SHA256_TAG,
    WITH_MAKE_TAG,
)
from co2.training_summary import summarise
from co2_model import columns as col
from co2_model.families import FAMILIES
from co2_model.model import build_model, fit, supports_sample_weight

log = get_logger("co2.train")

# The column of a candidate's predictions file (`Candidate.predictions_path`).
PREDICTED = "predicted_g_km"
# MLflow keeps a dataset digest of at most 36 characters: the start of the split file's sha256.
DIGEST_CHARS = 16


def train_family(
    family: str,
    lineage_path: Path,
    settings: Settings,
    *,
    run_tags: dict[str, str] | None = None,
) -> list[Candidate]:
    """Fit the family with and without the make, score both on the test split, log both runs."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    import mlflow

    route_mlflow_logging()
    lineage = read_json(lineage_path)
    by_year = pd.read_parquet(lineage["train"]["path"])
    train = aggregate(by_year.drop(columns=[col.YEAR], errors="ignore"))  # a configuration's years as one
    test = pd.read_parquet(lineage["test"]["path"])
    client = mlflow_client(settings)  # points mlflow at the tracking server, fails clearly if it is down
    splits = split_datasets(lineage, train, test)
    experiment_id = prepare_experiment(client, settings.experiment_name)
    summary = summarise(train)  # stored with each model: where a car sits among the training cars
    candidates = []
    for with_make in (False, True):
        name = f"{family}{'_with_make' if with_make else ''}"
        model = build_model(family, with_make, settings.random_seed, train_rows=len(train))
        weights = train[col.REGISTRATIONS] if supports_sample_weight(family) else None
        log.info("train_started", candidate=name, train_rows=len(train))
        started = time.perf_counter()
        fit(model, train[col.MODEL_INPUT_COLUMNS], train[col.TARGET], weights)
        seconds = time.perf_counter() - started
        predicted, details = calibrate_and_score(model, test, calibration_rows(test, settings.split_salt))
        metrics = score_predictions(test, predicted)
        predictions_path = Path(lineage_path).parent / "predictions" / f"{name}.parquet"
        predictions_path.parent.mkdir(exist_ok=True)
        write_parquet(pd.DataFrame({PREDICTED: predicted}), predictions_path)
        aging = backtest(family, with_make, by_year, test, settings)
        with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
            mlflow.set_tags(
                {
                    FAMILY_TAG: family,
                    WITH_MAKE_TAG: str(with_make).lower(),
                    RAW_SHA256_TAG: lineage["raw_sha256"],
                    TRAIN_SHA256_TAG: lineage["train"]["sha256"],
                    TEST_SHA256_TAG: lineage["test"]["sha256"],
                    **model_code_run_tags(),
                    **(run_tags or {}),
                }
            )
            mlflow.log_params(
                {
                    "family": family,
                    "with_make": with_make,
                    "train_rows": len(train),
                    "train_registrations": int(train[col.REGISTRATIONS].sum()),
                    "test_rows": len(test),
                    "weighted_by_registrations": weights is not None,
                    "years": ",".join(map(str, lineage.get("raw_metadata", {}).get("years", []))),
                    "eea_tables": ",".join(lineage.get("raw_metadata", {}).get("tables", {}).values())[:500],
                    "backtest_year": aging.get("backtest_year", "none"),
                    **{f"regressor__{k}": v for k, v in _regressor_params(model).items()},
                }
            )
            mlflow.log_metrics(rounded({"train_seconds": seconds, **details, **aging}))
            mlflow.log_dict(lineage, "lineage.json")
            mlflow.log_input(splits["train"], context="training")
            with warnings.catch_warnings():
                # skops looks each numpy ufunc up in every loaded module, touching Airflow's deprecated
                # module attributes: a thousand DeprecatedImportWarnings per model in the task log
                warnings.filterwarnings("ignore", module=r"skops\.io\._utils")
                model_uri = log_model(model, test[col.MODEL_INPUT_COLUMNS].head(5), training_summary=summary)
            log_model_evaluation(metrics, test, predicted, splits["test"])
        candidate = Candidate(
            family,
            with_make,
            run.info.run_id,
            model_uri,
            **metrics,
            train_seconds=round(seconds, 2),
            backtest_mae_g_km=aging.get("backtest_mae_g_km"),
            predictions_path=str(predictions_path),
        )
        log.info(
            "train_finished", candidate=name, run_id=run.info.run_id, seconds=round(seconds, 1), **rounded(metrics)
        )
        candidates.append(candidate)
    return candidates


def split_datasets(lineage: dict[str, Any], train: pd.DataFrame, test: pd.DataFrame) -> dict[str, Any]:
    """Train and test as MLflow datasets, for each run's Datasets panel: their file as source and the
    start of its sha256 (the lineage's) as digest."""
    from mlflow.data.pandas_dataset import from_pandas

    with _quiet_dataset_hints():
        return {
            split: from_pandas(
                frame,
                source=lineage[split]["path"],
                targets=col.TARGET,
                name=split,
                digest=lineage[split]["sha256"][:DIGEST_CHARS],
            )
            for split, frame in (("train", train), ("test", test))
        }


@contextlib.contextmanager
def _quiet_dataset_hints() -> Iterator[None]:
    """MLflow warns that a local path "can be interpreted in multiple ways" (two names for one source
    class) and that integer columns cannot hold missing values (the registrations never miss): neither
    is a problem, and each would show in the task log as a warning on every run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted", UserWarning)
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer column", UserWarning)
        yield


def log_model_evaluation(metrics: dict[str, float], test: pd.DataFrame, predicted: Any, test_set: Any) -> None:
    """Attach the test split's metrics to the logged model (its page lists them with the dataset), and
    let MLflow's regressor evaluation score the same predictions, each car weighted by its registrations."""
    import mlflow
    import numpy as np
    from mlflow.data.pandas_dataset import from_pandas

    logged = mlflow.last_logged_model()
    if logged is None:
        raise RuntimeError("no model was logged in this run: log it before attaching its evaluation")
    model_id = logged.model_id
    mlflow.log_metrics(rounded(metrics), model_id=model_id, dataset=test_set)
    answered = ~np.isnan(predicted)
    scored = test.loc[answered, [col.TARGET]].assign(**{PREDICTED: predicted[answered]})
    with _quiet_dataset_hints():
        data = from_pandas(
            scored,
            source=test_set.source,
            targets=col.TARGET,
            predictions=PREDICTED,
            name="test",
            digest=test_set.digest,
        )
    with printed_as_info("mlflow"), _quiet_dataset_hints():
        mlflow.models.evaluate(
            data=data,
            model_type="regressor",
            model_id=model_id,
            evaluator_config={
                "sample_weights": test.loc[answered, col.REGISTRATIONS].to_numpy(),
                "log_model_explainability": False,
            },
        )


def backtest(
    family: str, with_make: bool, train: pd.DataFrame, test: pd.DataFrame, settings: Settings
) -> dict[str, float]:
    """The family fit on every year of the window but the newest, scored on the newest year's test
    cars (configurations it has never seen, in a year it has never seen); empty for a one-year window."""
    if col.YEAR not in train or col.YEAR not in test:
        return {}
    newest = int(test[col.YEAR].max())
    older = train[train[col.YEAR] < newest]
    scored = test[test[col.YEAR] == newest]
    if older.empty or scored.empty:
        return {}
    older = aggregate(older.drop(columns=[col.YEAR]))
    model = build_model(family, with_make, settings.random_seed, train_rows=len(older))
    weights = older[col.REGISTRATIONS] if supports_sample_weight(family) else None
    started = time.perf_counter()
    fit(model, older[col.MODEL_INPUT_COLUMNS], older[col.TARGET], weights)
    scores = evaluate(model, scored)
    log.info(
        "backtest_finished",
        family=family,
        with_make=with_make,
        year=newest,
        seconds=round(time.perf_counter() - started, 1),
        **rounded(scores),
    )
    return {"backtest_year": float(newest), **{f"backtest_{name}": value for name, value in scores.items()}}


def _regressor_params(model: Any) -> dict[str, Any]:
    regressor = model.named_steps["regressor"].regressor.steps[-1][1]
    return {k: v for k, v in regressor.get_params().items() if isinstance(v, (int, float, str, bool)) or v is None}
