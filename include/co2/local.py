"""The platform's servers as plain processes on one machine, state under `CO2_HOME`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from co2 import http_client
from co2.logs import get_logger

log = get_logger("co2.local")

PROJECT_DIR = Path(__file__).resolve().parents[2]
SAMPLE_CSV = PROJECT_DIR / "data" / "sample" / "co2cars_2021_sample.csv"


def co2_home() -> Path:
    from co2.settings import get_settings

    return (get_settings().home or PROJECT_DIR / ".co2").resolve()


def private_directory(path: Path) -> Path:
    """`path` readable by this user only (0700): created so, or tightened if it exists.

    The platform's home holds generated passwords and keys; folders created inside it inherit no
    access from outside it.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file readable by this user only (0600) at every moment, whatever the umask.

    The text goes to a temporary file that `mkstemp` creates 0600 beside `path`, which then
    replaces `path` in one rename: no reader ever sees a wider mode or a half-written file.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


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


class ProcessError(RuntimeError):
    """A process this platform started did not come up; says which and where its log is."""


def spawn(
    command: list[str], log_path: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start in a process group of its own (so that stopping it stops what it started), output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as handle:
        return subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )


def wait_until_healthy(
    name: str, healthy: Callable[[], bool], alive: Callable[[], bool], log_path: Path, timeout_seconds: float
) -> float:
    """Seconds until `healthy()`; a ProcessError with the log's tail if the process dies or time runs out."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_seconds:
        if not alive():
            raise ProcessError(
                f"{name} exited before becoming healthy; its log {log_path} ends with:\n{tail(log_path)}"
            )
        if healthy():
            return time.monotonic() - began
        time.sleep(0.3)
    raise ProcessError(f"{name} not healthy after {timeout_seconds:.0f}s; see {log_path}:\n{tail(log_path)}")


def http_ok(url: str, accept: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return accept(http_client.shared().get(url, timeout=3.0))
        except httpx.HTTPError:
            return False

    return check


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        process = psutil.Process(pid)
    except psutil.Error:
        return []
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return [process]


def stop_group(pid: int, tree: list[psutil.Process], timeout_seconds: float) -> dict[int, int | None]:
    """SIGTERM the process group led by `pid`, then SIGKILL whatever of `tree` outlives the timeout.

    Returns the exit code of each process of `tree` by pid (negative: the signal that ended it).
    """
    _signal_group(pid, signal.SIGTERM)
    gone, alive = psutil.wait_procs(tree, timeout=timeout_seconds)
    if alive:
        log.warning("process_kill", pid=pid, pids=[p.pid for p in alive])
        _signal_group(pid, signal.SIGKILL)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        killed, _ = psutil.wait_procs(alive, timeout=5)
        gone += killed
    return {process.pid: getattr(process, "returncode", None) for process in gone}


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


@dataclass
class ManagedProcess:
    """A server this platform started: its process, its health URL and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    health_url: str
    log_path: Path

    def wait_healthy(self, timeout_seconds: float = 120.0) -> None:
        try:
            wait_until_healthy(
                self.name,
                http_ok(self.health_url),
                lambda: self.process.poll() is None,
                self.log_path,
                timeout_seconds,
            )
        except ProcessError:
            self.stop()
            raise
        log.info("process_healthy", name=self.name, url=self.health_url, pid=self.process.pid)

    def stop(self, timeout_seconds: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left."""
        if self.process.poll() is not None:
            return
        codes = stop_group(self.process.pid, process_tree(self.process.pid), timeout_seconds)
        self.process.returncode = codes.get(self.process.pid)  # psutil reaped it, Popen cannot know
        log.info("process_stopped", name=self.name, pid=self.process.pid)


def start(
    name: str, command: list[str], health_url: str, log_path: Path, env: Mapping[str, str] | None = None
) -> ManagedProcess:
    """Start a server in its own process group (so that stopping it stops its workers too)."""
    process = spawn(command, log_path, env)
    log.info("process_started", name=name, pid=process.pid, log=str(log_path))
    return ManagedProcess(name, process, health_url, log_path)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


# What the local platform's discodata server serves besides the real sample: two more years generated
# from it (co2.generated), the newest provisional.
OFFLINE_YEARS = (2022, 2023)
# The server's job runner (GenAI scorers, trace roll-ups) is unused here and costs ~1 GB of idle workers.
# Registry webhooks go to the prediction service, which is on loopback (co2 up) or on the compose
# network: MLflow allows only https to public addresses unless told otherwise. Its list of webhooks is
# cached; 5 s instead of 60 s, so that a service that registers at start hears the next promotion.
MLFLOW_SERVER_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_CACHE_TTL": "5",
}
# Encrypts the webhooks' HMAC secrets in MLflow's database (a Fernet key); without it MLflow draws a
# new key per process and cannot read the secrets back after a restart.
WEBHOOK_KEY_ENV = "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"
# For every process that uses MLflow's client: its usage telemetry phones home and rewrites
# os.environ from a thread while a task logs its run (seen failing tasks with KeyError
# '_MLFLOW_TELEMETRY_SESSION_ID').
MLFLOW_CLIENT_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true"}


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
    (private_directory(home) / "mlflow").mkdir(parents=True, exist_ok=True)
    backend = backend_store_uri or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    command = mlflow_server_command(host, port, backend, home / "mlflow" / "artifacts")
    return start("mlflow", command, f"http://{host}:{port}/health", home / "logs" / "mlflow.log", MLFLOW_SERVER_ENV)


def start_emulator(home: Path, host: str, port: int, csv_path: Path = SAMPLE_CSV) -> ManagedProcess:
    command = [
        *(executable("co2"), "discodata-emulator", "--csv", str(csv_path), "--host", host, "--port", str(port)),
        *("--generate-years", *map(str, OFFLINE_YEARS)),
        *("--publish-log", str(home / "discodata-published.jsonl")),  # releases survive a restart
    ]
    return start(
        "discodata-emulator", command, f"http://{host}:{port}/health", home / "logs" / "discodata-emulator.log"
    )


def airflow_base_environment(airflow_home: Path, database_url: str) -> dict[str, str]:
    """Airflow configured for this project, the one base of `co2 run` and `co2 up` (compose sets the
    same): our DAGs and plugins, no examples, its home and metadata database."""
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_DIR / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_DIR / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url(database_url),
        **MLFLOW_CLIENT_ENV,
    }


def sqlalchemy_url(url: str) -> str:
    """Airflow wants a driver in PostgreSQL URLs; users write plain `postgresql://`."""
    return url.replace("postgresql://", "postgresql+psycopg2://", 1) if url.startswith("postgresql://") else url


def run_airflow_environment(home: Path) -> dict[str, str]:
    """`co2 run`'s Airflow: `airflow_base_environment` with its state (SQLite) in a private home under CO2_HOME."""
    airflow_home = private_directory(home) / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    return airflow_base_environment(airflow_home, f"sqlite:///{airflow_home / 'airflow.db'}")
