"""The local platform (`co2 up`) as a user runs it: the `co2` command in subprocesses, on loopback ports,
with Airflow and MLflow on PostgreSQL databases the session creates and drops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from co2.local import free_port
from co2.stack import AirflowClient, StackState
from tests.conftest import PROJECT_DIR

CO2 = str(Path(sys.executable).parent / "co2")


@dataclass
class LocalPlatform:
    """A `CO2_HOME` and the environment every `co2` command of the test runs with."""

    home: Path
    env: dict[str, str]

    def co2(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [CO2, *args], env=self.env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=timeout
        )
        if check and completed.returncode != 0:
            raise AssertionError(
                f"co2 {' '.join(args)} exited {completed.returncode}\n{completed.stdout}\n{completed.stderr[-4000:]}"
            )
        return completed

    @property
    def info(self) -> dict[str, Any]:
        return StackState.load(self.home).info

    def running(self) -> dict[str, int]:
        return {name: r.pid for name, r in StackState.load(self.home).running.items() if r.alive()}

    def airflow(self) -> AirflowClient:
        """Logged in as a REST client would: the admin password `co2 up` printed, a JWT from /auth/token."""
        password = json.loads((self.home / "secrets.json").read_text())["admin_password"]
        return AirflowClient(self.info["airflow_url"], self.info["airflow_user"], password)

    def served_version(self) -> str | None:
        answer = httpx.get(f"{self.info['api_url']}/model", timeout=5)
        return str(answer.json()["model_version"]) if answer.status_code == 200 else None

    def processes_of_home(self) -> list[str]:
        """Every process on the machine whose command line or environment names this CO2_HOME."""
        import psutil

        found = []
        for process in psutil.process_iter(["pid", "cmdline"]):
            try:
                text = " ".join(process.info["cmdline"] or [])
                if str(self.home) in text or process.environ().get("CO2_HOME") == str(self.home):
                    found.append(f"{process.pid} {text[:120]}")
            except psutil.Error:
                continue
        return found


def _clean_environment() -> dict[str, str]:
    """The test process's environment without the Airflow, MLflow and co2 settings of the test session."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "CO2_", "MLFLOW_", "PYTEST_")) and k != "PYTHONPATH"
    }


@pytest.fixture(scope="session")
def local_platform(postgres_database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:  # type: ignore[no-untyped-def]
    """A platform home on PostgreSQL with free ports; `co2 down` at the end whatever happened."""
    home = tmp_path_factory.mktemp("co2-home")
    env = {
        **_clean_environment(),
        "CO2_HOME": str(home),
        "CO2_AIRFLOW_DATABASE_URL": postgres_database("platform_airflow"),
        "CO2_MLFLOW_DATABASE_URL": postgres_database("platform_mlflow"),
        "CO2_CELERY_BROKER_URL": "redis://127.0.0.1:6379/9",
        "CO2_POLL_SECONDS": "2",
        "CO2_AIRFLOW_PORT": str(free_port()),
        "CO2_MLFLOW_PORT": str(free_port()),
        "CO2_API_PORT": str(free_port()),
        "CO2_EMULATOR_PORT": str(free_port()),
        "CO2_PROMETHEUS_PORT": str(free_port()),
        "CO2_STATSD_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        # a killed task is noticed after 20 s instead of 60 s
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    }
    platform = LocalPlatform(home, env)
    yield platform
    platform.co2("down", check=False)
    import redis

    redis.Redis.from_url(env["CO2_CELERY_BROKER_URL"]).flushdb()
