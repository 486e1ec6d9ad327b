"""What the monitoring stack is checked against: real StatsD lines from a real Airflow, and real /metrics.

- `airflow_statsd_lines`: Airflow 3 as the compose stack runs it (deploy/airflow/init.sh, then API server with
  its admin login, scheduler, DAG processor; the LocalExecutor instead of Celery), StatsD on with InfluxDB-style
  tags as in docker-compose.yaml, two runs of `co2_retraining` (one that fails in `download`, one that
  succeeds) and one of the watcher `co2_eea_releases` against the real emulator and MLflow; a UDP listener
  records every line.
- `api_metrics_text`: the prediction service's /metrics after it loaded a real model and answered requests.
- `mlflow_stack`: MLflow with the compose file's arguments; `prometheus_url`: Prometheus with deploy/prometheus/.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.fernet import Fernet

from co2.local import WEBHOOK_KEY_ENV, ManagedProcess, free_port, start, tail
from co2.settings import Settings
from tests.conftest import PROJECT_DIR
from tests.deploy.statsd_exporter import StatsdExporter
from tests.serving.conftest import (  # noqa: F401  (sample_splits is a fixture used by api_metrics_text)
    log_candidate,
    promote,
    ready_version,
    running_service,
    sample_splits,
    wait_for,
)

DEPLOY_DIR = PROJECT_DIR / "deploy"
STATSD_PREFIX = "airflow"
DAG_ID = "co2_retraining"
WATCHER_ID = "co2_eea_releases"
ADMIN = "admin"
RUNS_TIMEOUT_SECONDS = 600
INIT_CHECKED_SECRETS = (
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "MLFLOW_DB_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "REGISTRY_WEBHOOK_SECRET",
    "MLFLOW_WEBHOOK_ENCRYPTION_KEY",
    "API_KEYS",
)
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


class StatsdListener:
    """A UDP socket on loopback that keeps every StatsD line it receives."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = int(self.socket.getsockname()[1])
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self.socket.recv(65536)
            except TimeoutError:
                continue
            self.lines.extend(line for line in packet.decode().splitlines() if line)

    def close(self) -> list[str]:
        self._stop.set()
        self._thread.join(5)
        self.socket.close()
        return list(self.lines)


def airflow_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "airflow"), *args]


def airflow_environment(home: Path, sql_conn: str, api_port: int, statsd_port: int) -> dict[str, str]:
    """The stack's Airflow settings (docker-compose.yaml) on loopback ports, with a private home and DB."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_conn,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_DIR / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_DIR / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the runs the test triggers, not the quarter's
        "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd_port),
        "AIRFLOW__METRICS__STATSD_PREFIX": STATSD_PREFIX,
        "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
    }


def run_init_script(env: dict[str, str], extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """deploy/airflow/init.sh as airflow-init runs it, with the stack's other secrets set (it checks them)."""
    secrets_env = {name: secrets.token_urlsafe(16) for name in INIT_CHECKED_SECRETS}
    return subprocess.run(
        ["bash", str(DEPLOY_DIR / "airflow" / "init.sh")],
        env={**env, **secrets_env, **extra},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def wait_for_runs(
    client: httpx.Client, run_ids: list[str], processes: list[ManagedProcess], dag_id: str = DAG_ID
) -> dict[str, str]:
    """The final state of each run; fails early if a server died."""
    deadline = time.monotonic() + RUNS_TIMEOUT_SECONDS
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        for process in processes:
            assert process.process.poll() is None, f"{process.name} died:\n{tail(process.log_path, 40)}"
        for run_id in run_ids:
            try:
                states[run_id] = client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
            except httpx.TimeoutException:  # the API server is busy starting tasks on a small machine
                continue
        if all(state in ("success", "failed") for state in states.values()):
            return states
        time.sleep(2)
    raise AssertionError(f"runs not finished after {RUNS_TIMEOUT_SECONDS}s: {states}")


@pytest.fixture(scope="session")
def airflow_statsd_lines(
    postgres_database,  # type: ignore[no-untyped-def]
    mlflow_uri: str,
    emulator,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[str]:
    """Every StatsD line a real Airflow sends for one failed and one successful run of the DAG."""
    home = tmp_path_factory.mktemp("airflow-stack")
    sql_conn = postgres_database("airflow_stack").replace("postgresql://", "postgresql+psycopg2://")
    listener = StatsdListener()
    api_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **airflow_environment(home, sql_conn, api_port, listener.port),
        "CO2_DISCODATA_URL": emulator.url,
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "CO2_DATA_DIR": str(home / "data"),
        "CO2_MODEL_NAME": f"co2-emissions-stack-{uuid.uuid4().hex[:8]}",
    }
    admin_password = secrets.token_urlsafe(16)
    initialised = run_init_script(env, {"AIRFLOW_ADMIN_USER": ADMIN, "AIRFLOW_ADMIN_PASSWORD": admin_password})
    assert initialised.returncode == 0, initialised.stdout[-3000:] + initialised.stderr[-3000:]

    api = f"http://127.0.0.1:{api_port}"
    servers = [
        start(
            "airflow-apiserver",
            airflow_command("api-server", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1"),
            f"{api}/api/v2/monitor/health",
            home / "apiserver.log",
            env,
        )
    ]
    try:
        servers[0].wait_healthy(180)
        for name, command in (("airflow-scheduler", "scheduler"), ("airflow-dag-processor", "dag-processor")):
            servers.append(start(name, airflow_command(command), "", home / f"{command}.log", env))
        login = httpx.post(f"{api}/auth/token", json={"username": ADMIN, "password": admin_password}, timeout=60)
        assert login.status_code == 201, login.text
        client = httpx.Client(
            base_url=api, headers={"Authorization": f"Bearer {login.json()['access_token']}"}, timeout=60
        )
        wait_for(lambda: client.get(f"/api/v2/dags/{DAG_ID}").status_code == 200, 180, every=1)
        run_ids = []
        # a table the service does not have: download fails at once (errorcode 10003), without retries
        for conf in ({"tables": {"2021": "co2cars_2021Fv99"}}, {}):
            answer = client.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
            assert answer.status_code == 200, answer.text
            run_ids.append(answer.json()["dag_run_id"])
        client.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
        states = wait_for_runs(client, run_ids, servers)
        assert [states[r] for r in run_ids] == ["failed", "success"], states
        # the daily watcher's first look at the listing: every table is new to it, an Asset event (the
        # retraining DAG paused first: the two runs above are the ones the tests count)
        client.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": True}).raise_for_status()
        watcher = client.post(f"/api/v2/dags/{WATCHER_ID}/dagRuns", json={"logical_date": None, "conf": {}})
        assert watcher.status_code == 200, watcher.text
        client.patch(f"/api/v2/dags/{WATCHER_ID}", json={"is_paused": False}).raise_for_status()
        watched = wait_for_runs(client, [watcher.json()["dag_run_id"]], servers, WATCHER_ID)
        assert set(watched.values()) == {"success"}, watched
        time.sleep(3)  # the scheduler's last lines of a finished run
    finally:
        for server in reversed(servers):
            server.stop()
    return listener.close()


@pytest.fixture(scope="session")
def api_metrics_text(mlflow_uri: str, sample_splits) -> Iterator[str]:  # type: ignore[no-untyped-def]  # noqa: F811
    """/metrics of the real service once it serves a real model and answered good, bad and unusual cars."""
    settings = Settings(
        mlflow_tracking_uri=mlflow_uri, model_name=f"co2-deploy-{uuid.uuid4().hex[:8]}", poll_seconds=1.0
    )
    promote(mlflow_uri, settings.model_name, log_candidate(mlflow_uri, "knn", sample_splits))
    with running_service(settings) as url:
        wait_for(lambda: ready_version(url) is not None, 120)
        car = {"fuel_type": "PETROL", "mass_kg": 1280, "engine_capacity_cm3": 999, "engine_power_kw": 81}
        assert httpx.post(f"{url}/predict", json=car, timeout=30).status_code == 200
        assert httpx.post(f"{url}/predict", json={**car, "mass_kg": 6500}, timeout=30).status_code == 200
        assert httpx.post(f"{url}/predict", json={"mass_kg": 1280}, timeout=30).status_code == 422
        scraped = httpx.get(f"{url}/metrics", timeout=30).text
    # stopped before the tests read it: the service's metrics live in the process, and a follower
    # left polling would keep setting them under the feet of later tests
    yield scraped


@pytest.fixture(scope="session")
def exporter(airflow_statsd_lines: list[str]) -> StatsdExporter:
    """deploy/statsd/mapping.yml applied to the real run's lines."""
    exporter = StatsdExporter(DEPLOY_DIR / "statsd" / "mapping.yml")
    for line in airflow_statsd_lines:
        exporter.receive(line)
    return exporter


def compose_service(name: str) -> dict[str, Any]:
    return yaml.safe_load((PROJECT_DIR / "docker-compose.yaml").read_text())["services"][name]


@pytest.fixture(scope="session")
def mlflow_stack(postgres_database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """MLflow started with the compose file's own arguments (loopback host and port, paths in a temp dir)."""
    home = tmp_path_factory.mktemp("mlflow-stack")
    port = free_port()
    paths = {"--artifacts-destination": home / "artifacts", "--expose-prometheus": home / "prometheus"}
    arguments = []
    for argument in compose_service("mlflow")["command"]:
        flag, _, value = argument.partition("=")
        value = {"--host": "127.0.0.1", "--port": str(port)}.get(flag, str(paths.get(flag, value)))
        if flag == "--allowed-hosts":
            value += f",127.0.0.1:{port}"
        arguments.append(f"{flag}={value}" if value else flag)
    backend = postgres_database("mlflow_stack").replace("postgresql://", "postgresql+psycopg2://")
    server = start(
        "mlflow-stack",
        [str(Path(sys.executable).parent / "mlflow"), *arguments],
        f"http://127.0.0.1:{port}/health",
        home / "mlflow.log",
        {
            **compose_service("mlflow")["environment"],
            "MLFLOW_BACKEND_STORE_URI": backend,
            WEBHOOK_KEY_ENV: Fernet.generate_key().decode(),  # compose: from .env
        },
    )
    server.wait_healthy(180)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus (Debian's) with deploy/prometheus/ as its configuration, on a loopback port."""
    executable = shutil.which("prometheus")
    assert executable, "prometheus is missing: `make tools` installs it (Debian package prometheus)"
    home = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    server = start(
        "prometheus",
        [
            executable,
            f"--config.file={DEPLOY_DIR / 'prometheus' / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        f"http://127.0.0.1:{port}/-/ready",
        home / "prometheus.log",
    )
    server.wait_healthy(60)
    yield f"http://127.0.0.1:{port}"
    server.stop()
