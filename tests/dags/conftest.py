"""Airflow's metadata database for DAG tests (a PostgreSQL database of the session's own, migrated), the
DAGs as the DAG processor parses them, and one DAG run through `dag.test()` with a platform's settings."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def airflow_db(postgres_database) -> str:  # type: ignore[no-untyped-def]
    """Create and migrate the database that tests/conftest.py pointed Airflow at."""
    dsn = postgres_database("airflow")
    assert dsn.rsplit("/", 1)[1] in os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return dsn


@pytest.fixture(scope="session")
def dagbag(airflow_db):  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import PROJECT_DIR

    bag = DagBag(dag_folder=str(PROJECT_DIR / "dags"))
    assert bag.import_errors == {}
    for dag in bag.dags.values():
        for task in dag.tasks:  # same retries, without minutes of waiting between them
            task.retry_delay = timedelta(seconds=1)
            task.retry_exponential_backoff = False
    return bag


@pytest.fixture(scope="session")
def dag(dagbag):  # type: ignore[no-untyped-def]
    return dagbag.get_dag("co2_retraining")


def run(dag, platform: dict[str, Any], discodata_url: str, conf: dict | None = None, **env: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """One DAG run with the platform's settings; the state of each task (`__run__`: the run's)."""
    from co2.settings import get_settings

    values = {
        "CO2_DISCODATA_URL": discodata_url,
        "MLFLOW_TRACKING_URI": platform["mlflow_uri"],
        "CO2_DATA_DIR": str(platform["data_dir"]),
        "CO2_MODEL_NAME": platform["model_name"],
        "CO2_HTTP_BACKOFF_SECONDS": "0.05",
        "CO2_HTTP_RETRIES": "3",
        **env,
    }
    saved = {k: os.environ.get(k) for k in values}
    # dag.test() leaves the run's conf in the DAG's and tasks' params: the next run starts clean
    params = copy.deepcopy(dag.params), {task.task_id: copy.deepcopy(task.params) for task in dag.tasks}
    os.environ.update(values)
    get_settings.cache_clear()
    try:
        dagrun = dag.test(run_conf=conf or {})
    finally:
        dag.params = params[0]
        for task in dag.tasks:
            task.params = params[1][task.task_id]
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
    states = {ti.task_id: str(ti.state) for ti in dagrun.get_task_instances()}
    states["__run__"] = str(dagrun.state)
    return states
