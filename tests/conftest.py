"""Real servers on loopback ports: the discodata emulator, MLflow on PostgreSQL, Airflow's metadata DB.

Each test session creates its own PostgreSQL databases and drops them at the end.
"""

from __future__ import annotations

import email.policy
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from cryptography.fernet import Fernet

from co2.local import airflow_base_environment  # co2.local imports no Airflow

# Airflow reads its configuration when first imported: point it at a private home before any
# test module imports it. The metadata database itself is created by the `airflow_db` fixture.
_SESSION = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="co2-airflow-"))
PROJECT_DIR = Path(__file__).resolve().parents[1]
PG_ADMIN_DSN = os.environ.get("CO2_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
AIRFLOW_DB = f"co2_test_airflow_{_SESSION}"
os.environ.update(
    {
        **airflow_base_environment(_AIRFLOW_HOME, PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{AIRFLOW_DB}"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
)

from co2.emulator import DiscodataDatabase, EmulatorServer  # noqa: E402
from co2.files import read_json  # noqa: E402
from co2.local import (  # noqa: E402
    MLFLOW_SERVER_ENV,
    WEBHOOK_KEY_ENV,
    ManagedProcess,
    free_port,
    mlflow_server_command,
    start,
)
from co2.pipeline.preprocess import preprocess  # noqa: E402
from co2.settings import Settings, get_settings  # noqa: E402
from co2_model import columns as col  # noqa: E402

SAMPLE_CSV = PROJECT_DIR / "data" / "sample" / "co2cars_2021_sample.csv"


# --- PostgreSQL ---------------------------------------------------------------------------------
def _admin_execute(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[object]:
    """A factory of fresh PostgreSQL databases, all dropped when the session ends."""
    created: list[str] = []

    def create(purpose: str) -> str:
        name = f"co2_test_{purpose}_{_SESSION}"
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}"')
        _admin_execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"

    yield create
    for name in created:
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- data ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sample_frame() -> pd.DataFrame:
    return pd.read_csv(SAMPLE_CSV, low_memory=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", http_backoff_seconds=0.01, http_retries=3, http_timeout_seconds=5)


# --- discodata emulator -------------------------------------------------------------------------
def run_emulator(frame: pd.DataFrame, settings: Settings) -> EmulatorServer:
    """An emulator serving `frame` (discodata columns, with `Year`) in a background thread."""
    db = DiscodataDatabase()
    db.append_by_year(frame, settings)
    server = EmulatorServer(db, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="session")
def emulator(sample_frame: pd.DataFrame) -> Iterator[EmulatorServer]:
    """The emulator on the real sample, shared by the session (faults reset per test)."""
    server = run_emulator(sample_frame, Settings())
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def emulator_url(emulator: EmulatorServer) -> Iterator[str]:
    httpx.post(f"{emulator.url}/_emulator/faults", json={"mode": "none"}).raise_for_status()
    yield emulator.url
    httpx.post(f"{emulator.url}/_emulator/faults", json={"mode": "none"}).raise_for_status()


# --- MLflow -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mlflow_server(postgres_database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:  # type: ignore[no-untyped-def]
    """A real MLflow tracking server and registry, backend on PostgreSQL, serving artifacts."""
    backend = postgres_database("mlflow")
    home = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    process = start(
        "mlflow",
        mlflow_server_command("127.0.0.1", port, backend, home / "artifacts"),
        f"http://127.0.0.1:{port}/health",
        home / "mlflow.log",
        {**MLFLOW_SERVER_ENV, WEBHOOK_KEY_ENV: Fernet.generate_key().decode()},
    )
    process.wait_healthy(180)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def mlflow_uri(mlflow_server: ManagedProcess) -> str:
    return mlflow_server.health_url.removesuffix("/health")


@pytest.fixture
def model_name() -> str:
    """A registered-model name of the test's own, so tests do not see each other's versions."""
    return f"co2-emissions-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _fresh_settings_cache() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# --- SMTP -----------------------------------------------------------------------------------------
class SmtpSink:
    """A real SMTP server (aiosmtpd) on a loopback port; keeps each message with its envelope recipients."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[list[str], EmailMessage]] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
                message = BytesParser(policy=email.policy.default).parsebytes(envelope.content)
                sink.messages.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def env(self, *recipients: str) -> dict[str, str]:
        """The settings that send the platform's failure mails here."""
        return {
            "CO2_NOTIFY_EMAIL_TO": json.dumps(list(recipients)),
            "CO2_NOTIFY_EMAIL_FROM": "co2-airflow@example.org",
            "CO2_NOTIFY_SMTP_HOST": "127.0.0.1",
            "CO2_NOTIFY_SMTP_PORT": str(self.port),
        }


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.controller.start()  # returns once the server answers
    yield sink
    sink.controller.stop()


# --- tiers ----------------------------------------------------------------------------------------
# A test that uses one of these fixtures needs a server of its own making (PostgreSQL, MLflow, Airflow's
# database, the prediction service, the local platform, a browser, Prometheus): it is marked `server`.
# `make test-fast` runs the others (`-m "not server"`); `make test` runs everything.
SERVER_FIXTURES = frozenset(
    {
        "postgres_database",
        "mlflow_server",
        "mlflow_uri",
        "airflow_db",
        "dagbag",
        "dag",
        "model_uris",
        "running_service",
        "service_settings",
        "local_platform",
        "browser",
        "airflow_statsd_lines",
        "api_metrics_text",
        "exporter",
        "mlflow_stack",
        "prometheus_url",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)


FIRST_WORKER_TESTS = ("tests/platform/", "tests/deploy/test_compose.py")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` (`-n 2 --dist loadscope`) runs two groups side by side, each in one worker, in
    collection order, its servers started once: the local platform's tests, which spend most of
    their time waiting on Airflow's scheduling, with the compose checks (to even the two out), and
    all the others. (A session fixture is set up once per worker: the Airflow run that the StatsD
    mapping and the dashboards both read stays on one side.) pytest-xdist's `loadgroup` cannot group
    on pytest 9, which keeps node ids elsewhere: a scope of our own does it."""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class PlatformAndOthers(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "platform" if nodeid.startswith(FIRST_WORKER_TESTS) else "others"

    return PlatformAndOthers(config, log)


# --- the sample as processed splits, without a server ---------------------------------------------
@pytest.fixture(scope="session")
def processed_sample(sample_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Train, test and lineage of the sample, as if downloaded one registration per row (cars with a WLTP CO2,
    as the download asks for)."""
    raw_dir = tmp_path_factory.mktemp("raw") / "sample"
    raw_dir.mkdir()
    present = [name for name in col.SOURCE_TO_DOMAIN if name in sample_frame.columns]
    cars = sample_frame[sample_frame["Ewltp (g/km)"].notna()]
    cars[present].assign(**{col.COUNT_ALIAS: 1, "Year": 2021}).to_parquet(raw_dir / "snapshot.parquet")
    result = preprocess(
        raw_dir / "snapshot.parquet", tmp_path_factory.mktemp("processed"), test_fraction=0.2, split_salt="co2"
    )
    return {
        "train": pd.read_parquet(result.train_path),
        "test": pd.read_parquet(result.test_path),
        "lineage": read_json(Path(result.lineage_path)),
    }
