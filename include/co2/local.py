"""The platform's servers as plain processes on one machine, state under `CO2_HOME`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from co2.logs import get_logger

log = get_logger("co2.local")

PROJECT_DIR = Path(__file__).resolve().parents[2]
SAMPLE_CSV = PROJECT_DIR / "data" / "sample" / "co2cars_2021_sample.csv"


def co2_home() -> Path:
    from co2.settings import get_settings

    return (get_settings().home or PROJECT_DIR / ".co2").resolve()


def executable(name: str) -> str:
    """A console script of this environment (the venv's `airflow`, `mlflow`), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"`{name}` is not installed in this environment; run `make install`")
    return found


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class ManagedProcess:
    """A server this platform started: its process, its health URL and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    health_url: str
    log_path: Path

    def wait_healthy(self, timeout_seconds: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.process.returncode} before becoming healthy; "
                    f"see {self.log_path}:\n{tail(self.log_path)}"
                )
            try:
                if httpx.get(self.health_url, timeout=2.0).status_code == 200:
                    log.info("process_healthy", name=self.name, url=self.health_url, pid=self.process.pid)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(
            f"{self.name} not healthy at {self.health_url} after {timeout_seconds:.0f}s; see {self.log_path}"
        )

    def stop(self, timeout_seconds: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        except ProcessLookupError:
            pass
        log.info("process_stopped", name=self.name, pid=self.process.pid)


def start(
    name: str, command: list[str], health_url: str, log_path: Path, env: Mapping[str, str] | None = None
) -> ManagedProcess:
    """Start a server in its own process group (so that stopping it stops its workers too)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handle = log_path.open("ab")
    process = subprocess.Popen(
        command,
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    handle.close()
    log.info("process_started", name=name, pid=process.pid, log=str(log_path))
    return ManagedProcess(name, process, health_url, log_path)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


# The server's job runner (GenAI scorers, trace roll-ups) is unused here and costs ~1 GB of idle workers.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_server_command(
    host: str, port: int, backend_store_uri: str, artifacts_dir: Path, workers: int = 1
) -> list[str]:
    """The tracking server and registry, serving artifacts itself, accepting its own host names."""
    allowed = ",".join(f"{h}:{port}" for h in ("127.0.0.1", "localhost", host) if h != "0.0.0.0")
    return [
        executable("mlflow"),
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(artifacts_dir),
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--allowed-hosts",
        allowed,
    ]


def start_mlflow(home: Path, host: str, port: int, backend_store_uri: str | None = None) -> ManagedProcess:
    (home / "mlflow").mkdir(parents=True, exist_ok=True)
    backend = backend_store_uri or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    command = mlflow_server_command(host, port, backend, home / "mlflow" / "artifacts")
    return start("mlflow", command, f"http://{host}:{port}/health", home / "logs" / "mlflow.log", MLFLOW_SERVER_ENV)


def start_emulator(home: Path, host: str, port: int, csv_path: Path = SAMPLE_CSV) -> ManagedProcess:
    command = [executable("co2"), "discodata-emulator", "--csv", str(csv_path), "--host", host, "--port", str(port)]
    return start(
        "discodata-emulator", command, f"http://{host}:{port}/health", home / "logs" / "discodata-emulator.log"
    )


def airflow_env(home: Path) -> dict[str, str]:
    """Airflow configured for this project: our DAGs and plugins, no examples, state under CO2_HOME."""
    airflow_home = home / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_DIR / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_DIR / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
    }
