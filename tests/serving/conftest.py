"""The prediction service on a loopback port (real uvicorn, real lifespan) against a real MLflow."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
import uvicorn
from mlflow import MlflowClient
from pydantic import SecretStr

from co2.evaluation import calibrate_intervals, calibration_rows
from co2.local import free_port
from co2.mlflow_utils import log_model
from co2.pipeline.download import download
from co2.pipeline.preprocess import preprocess
from co2.settings import Settings
from co2.training_summary import summarise
from co2_model import columns as col
from co2_model.families import FAMILIES
from co2_model.model import build_model, fit, supports_sample_weight
from serving.main import create_app


@pytest.fixture(scope="session")
def sample_splits(tmp_path_factory: pytest.TempPathFactory, emulator) -> tuple[pd.DataFrame, pd.DataFrame]:  # type: ignore[no-untyped-def]
    """The real sample through the pipeline's own download and preprocessing."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("serving-data"), discodata_url=emulator.url)
    snapshot = download(settings, {2021: settings.table_for(2021)})
    result = preprocess(Path(snapshot.snapshot_path), settings.processed_dir, test_fraction=0.2, split_salt="co2")
    return pd.read_parquet(result.train_path), pd.read_parquet(result.test_path)


def log_candidate(
    mlflow_uri: str, family: str, splits: tuple[pd.DataFrame, pd.DataFrame], with_make: bool = True
) -> str:
    """Train one real candidate on the sample and log it to `mlflow_uri`; its model URI."""
    train, test = splits
    model = fit(
        build_model(family, with_make),
        train[col.MODEL_INPUT_COLUMNS],
        train[col.TARGET],
        train[col.REGISTRATIONS] if supports_sample_weight(family) else None,
    )
    calibrate_intervals(model, test, calibration_rows(test, "co2"))  # as the training step does, summary too
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_experiment("co2-serving-tests")
    with mlflow.start_run():
        return log_model(model, test[col.MODEL_INPUT_COLUMNS].head(5), training_summary=summarise(train))


@pytest.fixture(scope="session")
def model_uris(mlflow_uri: str, sample_splits: tuple[pd.DataFrame, pd.DataFrame]) -> dict[str, str]:
    """Real, different models logged to the session's MLflow server (each family, with the make)."""
    return {family: log_candidate(mlflow_uri, family, sample_splits) for family in FAMILIES}


def promote(mlflow_uri: str, name: str, model_uri: str, tags: dict[str, str] | None = None) -> str:
    """Register a version and point the production alias at it, as the pipeline's register step does."""
    client = MlflowClient(mlflow_uri, registry_uri=mlflow_uri)
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)
    version = mlflow.register_model(model_uri, name, tags=tags or {"co2.mae_g_km": "3.1", "co2.raw_sha256": "ab" * 32})
    client.set_registered_model_alias(name, "production", version.version)
    return str(version.version)


@contextmanager
def running_service(settings: Settings, webhook_secret: str = "") -> Iterator[str]:
    """The app under uvicorn in a thread on a free loopback port; yields its base URL. With a
    `webhook_secret` it registers its registry webhook (removed again at the end)."""
    port = free_port()
    if webhook_secret:
        settings = settings.model_copy(
            update={
                "webhook_url": f"http://127.0.0.1:{port}/registry/events",
                "webhook_secret": SecretStr(webhook_secret),
            }
        )
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        if webhook_secret:
            client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
            for hook in client.list_webhooks(max_results=100):
                if hook.url == settings.webhook_url:
                    client.delete_webhook(hook.webhook_id)


def wait_for(predicate: Any, timeout: float, every: float = 0.1) -> float:
    """Seconds until predicate() is true; fails after `timeout`."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"not true after {timeout}s"
        time.sleep(every)
    return time.monotonic() - started


def metric_value(url: str, sample: str) -> float:
    """One sample's value on /metrics, e.g. `co2_model_load_failures_total`.

    The metrics belong to the process: every service a test session runs in it counts into them.
    """
    scraped = httpx.get(f"{url}/metrics").text
    return float(next(line.split()[1] for line in scraped.splitlines() if line.startswith(f"{sample} ")))


def ready_version(url: str) -> str | None:
    try:
        body = httpx.get(f"{url}/ready", timeout=5).json()
    except httpx.HTTPError:
        return None
    return body["model_version"] if body["ready"] else None


@pytest.fixture
def service_settings(mlflow_uri: str) -> Settings:
    return Settings(mlflow_tracking_uri=mlflow_uri, model_name=f"co2-serving-{uuid.uuid4().hex[:8]}", poll_seconds=1.0)
