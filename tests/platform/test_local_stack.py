"""`co2 up` end to end: the real Airflow, MLflow, prediction service and Prometheus as processes.

The tests run in order on one platform: a first triggered run promotes, a second promotes nothing,
a run survives its scheduler being killed, `co2 down` leaves nothing behind, and the same home
comes back with the CeleryExecutor and a worker that runs the training tasks.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import mlflow.sklearn
import numpy as np
import pandas as pd
import psutil
import pytest
from mlflow import MlflowClient

from co2 import columns as col
from co2.mlflow_utils import download_version
from co2.stack import DAG_ID
from tests.platform.conftest import LocalPlatform

pytestmark = pytest.mark.timeout(1800)
TRAIN_TASKS = {"train_random_forest", "train_linear_regression", "train_knn"}
MODEL = "co2-emissions"


def run_to_end(platform: LocalPlatform, run_id: str, timeout: float = 900) -> tuple[str, dict[str, dict[str, Any]]]:
    client = platform.airflow()
    state = "running"
    for task_id, task_state, _ in client.follow(DAG_ID, run_id, timeout_seconds=timeout):
        if task_id == "__run__":
            state = task_state
    return state, client.task_states(DAG_ID, run_id)


def registry(platform: LocalPlatform) -> MlflowClient:
    """A client of the platform's MLflow only (never the process-wide default another test set)."""
    return MlflowClient(platform.info["mlflow_url"], registry_uri=platform.info["mlflow_url"])


def production_version(platform: LocalPlatform) -> str:
    client = registry(platform)
    return str(client.get_model_version_by_alias(MODEL, "production").version)


def wait_served(platform: LocalPlatform, version: str, seconds: float = 30) -> float:
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        if platform.served_version() == version:
            return time.monotonic() - began
        time.sleep(0.2)
    raise AssertionError(f"service still serves {platform.served_version()}, not version {version}")


def raw_snapshots(platform: LocalPlatform) -> dict[str, str]:
    raw = platform.home / "data" / "raw"
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(raw.glob("*/snapshot.parquet"))}


def held_out_cars(platform: LocalPlatform, run_id: str, count: int = 300) -> pd.DataFrame:
    """The run's own test split (real EEA rows the model never trained on), as the pipeline wrote it."""
    client = platform.airflow()
    split = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/preprocess/xcomEntries/return_value")
    return pd.read_parquet(split.json()["value"]["test_path"]).head(count)


@pytest.fixture(scope="module")
def started(local_platform: LocalPlatform) -> dict[str, Any]:
    began = time.monotonic()
    output = local_platform.co2("up").stdout
    return {"seconds": time.monotonic() - began, "output": output}


def test_up_starts_every_component_and_says_where(local_platform: LocalPlatform, started: dict[str, Any]) -> None:
    assert set(local_platform.running()) == {
        "discodata-emulator",
        "statsd-sink",
        "mlflow",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "api",
        "prometheus",
    }
    info = local_platform.info
    for url in (info["airflow_url"], info["mlflow_url"], info["api_url"], info["prometheus_url"]):
        assert url in started["output"]
    assert "Airflow login" in started["output"] and str(local_platform.home / "logs") in started["output"]
    health = httpx.get(f"{info['airflow_url']}/api/v2/monitor/health").json()
    assert {health[k]["status"] for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == {"healthy"}
    status = local_platform.co2("status")
    assert "STOPPED" not in status.stdout and "total" in status.stdout
    # a wrong password is refused: the API is not open
    refused = httpx.post(f"{info['airflow_url']}/auth/token", json={"username": "admin", "password": "wrong"})
    assert refused.status_code == 401
    print(f"\nco2 up to healthy: {started['seconds']:.0f}s\n{status.stdout}")


def test_triggered_run_promotes_and_the_service_follows(
    local_platform: LocalPlatform, started: dict[str, Any], tmp_path: Path
) -> None:
    assert local_platform.served_version() is None  # nothing in production yet: not ready
    assert httpx.get(f"{local_platform.info['api_url']}/ready").status_code == 503

    client = local_platform.airflow()
    began = time.monotonic()
    run_id = client.trigger(DAG_ID, {})
    state, tasks = run_to_end(local_platform, run_id)
    promoted_after = time.monotonic() - began
    assert state == "success", {t: ti["state"] for t, ti in tasks.items()}
    assert {t for t, ti in tasks.items() if ti["state"] == "success"} == {
        "download",
        "validate",
        "preprocess",
        *TRAIN_TASKS,
        "compare",
        "register",
    }

    version = production_version(local_platform)
    tags = registry(local_platform).get_model_version(MODEL, version).tags
    assert tags["co2.promoted"] == "true"
    served_after = wait_served(local_platform, version, seconds=30)

    test = held_out_cars(local_platform, run_id)
    cars = [{k: v for k, v in row.items() if pd.notna(v)} for row in test[col.MODEL_INPUT_COLUMNS].to_dict("records")]
    answer = httpx.post(f"{local_platform.info['api_url']}/predict/batch", json={"cars": cars}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-model-version"] == version
    served = np.array([p["co2_wltp_g_km"] for p in answer.json()["predictions"]])
    local = download_version(registry(local_platform), local_platform.info["mlflow_url"], MODEL, version, str(tmp_path))
    direct = mlflow.sklearn.load_model(local).predict(pd.DataFrame(cars).reindex(columns=col.MODEL_INPUT_COLUMNS))
    np.testing.assert_allclose(served, direct, atol=0.005 + 1e-9)  # the service answers in 0.01 g/km
    mae = float(np.abs(served - test[col.TARGET].to_numpy()).mean())
    assert mae < 6.0, mae  # unweighted over configurations; the registry's weighted MAE is lower
    statsd = (local_platform.home / "logs" / "statsd.log").read_text()
    assert "airflow.co2.register.promoted" in statsd and "airflow.dagrun.duration.success" in statsd
    print(f"\ntrigger to promotion: {promoted_after:.0f}s; promotion to served: {served_after:.1f}s; MAE {mae:.2f}")


def test_prometheus_scrapes_the_service(local_platform: LocalPlatform) -> None:
    prometheus = local_platform.info["prometheus_url"]
    deadline = time.monotonic() + 60
    scraped = 0.0
    while time.monotonic() < deadline and scraped < 300:  # the 300 cars of the test before
        answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": "sum(co2_predictions_total)"}).json()
        scraped = float(answer["data"]["result"][0]["value"][1]) if answer["data"]["result"] else 0.0
        time.sleep(1)
    assert scraped >= 300, scraped
    targets = httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
    assert [t["health"] for t in targets if t["labels"]["job"] == "co2-api"] == ["up"]
    rules = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
    assert rules, "the compose stack's alert rules are loaded"


def test_second_trigger_with_the_same_data_promotes_nothing(local_platform: LocalPlatform) -> None:
    before = production_version(local_platform)
    run_id = local_platform.airflow().trigger(DAG_ID, {})
    state, _ = run_to_end(local_platform, run_id)
    assert state == "success"
    assert production_version(local_platform) == before
    client = registry(local_platform)
    newest = max(client.search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))
    assert int(newest.version) > int(before) and newest.tags["co2.promoted"] == "false", newest.tags
    time.sleep(3)  # longer than a poll
    assert local_platform.served_version() == before


def test_killed_scheduler_comes_back_and_the_run_finishes(local_platform: LocalPlatform) -> None:
    client = local_platform.airflow()
    run_id = client.trigger(DAG_ID, {})
    snapshots: dict[str, str] = {}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        tasks = client.task_states(DAG_ID, run_id)
        if tasks.get("train_random_forest", {}).get("state") == "running":
            snapshots = raw_snapshots(local_platform)
            break
        time.sleep(0.5)
    assert snapshots, "training never started"
    scheduler = local_platform.running()["airflow-scheduler"]
    os.killpg(scheduler, signal.SIGKILL)  # the scheduler and the task processes it forked
    psutil.wait_procs([psutil.Process(scheduler)], timeout=10)
    assert local_platform.co2("status", check=False).returncode == 3  # status sees the dead component

    local_platform.co2("up")  # brings back just what died
    assert local_platform.running()["airflow-scheduler"] != scheduler
    state, tasks = run_to_end(local_platform, run_id)
    assert state == "success", {t: (ti["state"], ti["try_number"]) for t, ti in tasks.items()}
    assert tasks["train_random_forest"]["try_number"] >= 2  # the killed attempt was retried
    after = raw_snapshots(local_platform)
    assert {path: after.get(path) for path in snapshots} == snapshots  # nothing overwritten or lost
    used = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/download/xcomEntries/return_value")
    assert used.json()["value"]["snapshot_path"] in snapshots  # the run went on with its first snapshot


def test_down_leaves_nothing_running(local_platform: LocalPlatform) -> None:
    pids = local_platform.running()
    assert pids
    output = local_platform.co2("down").stdout
    assert "scheduler" in output
    assert local_platform.running() == {}
    assert local_platform.processes_of_home() == []
    for pid in pids.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_celery_worker_runs_the_training_tasks(local_platform: LocalPlatform) -> None:
    """The same home again with the CeleryExecutor: state survived, the worker runs the tasks."""
    local_platform.co2("up", "--executor", "CeleryExecutor", "--celery-workers", "1")
    assert "airflow-worker-1" in local_platform.running()
    before = production_version(local_platform)
    client = local_platform.airflow()
    run_id = client.trigger(DAG_ID, {})
    state, tasks = run_to_end(local_platform, run_id)
    assert state == "success", {t: ti["state"] for t, ti in tasks.items()}
    worker_log = Path(local_platform.info["logs"]) / "airflow-worker-1.log"
    executed = [line for line in worker_log.read_text(errors="replace").splitlines() if "workload in Celery" in line]
    for task_id in TRAIN_TASKS:
        assert any(f"task_id='{task_id}'" in line for line in executed), (task_id, executed[-3:])
    assert production_version(local_platform) == before  # same data: nothing promoted
    local_platform.co2("down")
    assert local_platform.processes_of_home() == []
