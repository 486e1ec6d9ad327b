"""The whole platform as plain processes on one machine: `co2 up`, `co2 down`, `co2 status`.

The same services as the compose stack (Airflow's API server, scheduler, DAG processor, triggerer
and optional Celery workers; MLflow; the prediction service; Prometheus and Alertmanager when
installed), started in dependency order, each waited for until healthy. Everything they keep lives
under `CO2_HOME`: databases (SQLite unless a PostgreSQL URL is given), artifacts, logs, generated
secrets and `stack.json`, the record of what runs, which `co2 down` and `co2 status` read.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from co2.local import (
    MLFLOW_CLIENT_ENV,
    MLFLOW_SERVER_ENV,
    OFFLINE_YEARS,
    PROJECT_DIR,
    SAMPLE_CSV,
    WEBHOOK_KEY_ENV,
    ProcessError,
    airflow_base_environment,
    executable,
    http_ok,
    mlflow_server_command,
    port_is_free,
    private_directory,
    process_tree,
    spawn,
    sqlalchemy_url,
    stop_group,
    tail,
    wait_until_healthy,
    write_private,
)
from co2.logs import get_logger
from co2.settings import Settings

log = get_logger("co2.stack")

DAG_ID = "co2_retraining"
STATE_FILE = "stack.json"
PROMETHEUS_RULES = sorted((PROJECT_DIR / "deploy" / "prometheus" / "rules").glob("*.yml"))
# compose's Alertmanager configuration, and the script that writes the webhook's URL into a copy of it
ALERTMANAGER_DIR = PROJECT_DIR / "deploy" / "alertmanager"


# --- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class StackPlan:
    """What `co2 up` starts and where, decided from the settings before anything starts."""

    home: Path
    host: str
    executor: str
    celery_workers: int
    airflow_port: int
    mlflow_port: int
    api_port: int
    ui_port: int
    prometheus_port: int
    alertmanager_port: int
    emulator_port: int
    statsd_port: int
    statsd_exporter_port: int
    airflow_database_url: str
    mlflow_database_url: str
    celery_broker_url: str
    discodata_url: str | None  # None: the local discodata server on the bundled sample
    poll_seconds: float
    admin_user: str
    alert_webhook_url: str = ""  # empty: Alertmanager shows the alerts and sends them nowhere

    @classmethod
    def from_settings(cls, settings: Settings) -> StackPlan:
        home = (settings.home or PROJECT_DIR / ".co2").resolve()
        return cls(
            home=home,
            host="127.0.0.1",
            executor=settings.executor,
            celery_workers=settings.celery_workers if settings.executor == "CeleryExecutor" else 0,
            airflow_port=settings.airflow_port,
            mlflow_port=settings.mlflow_port,
            api_port=settings.api_port,
            ui_port=settings.ui_port,
            prometheus_port=settings.prometheus_port,
            alertmanager_port=settings.alertmanager_port,
            emulator_port=settings.emulator_port,
            statsd_port=settings.statsd_port,
            statsd_exporter_port=settings.statsd_exporter_port,
            airflow_database_url=settings.airflow_database_url or f"sqlite:///{home / 'airflow' / 'airflow.db'}",
            mlflow_database_url=settings.mlflow_database_url or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
            celery_broker_url=settings.celery_broker_url,
            discodata_url=settings.discodata_url if "discodata_url" in settings.model_fields_set else None,
            poll_seconds=settings.poll_seconds,
            admin_user=settings.airflow_admin_user,
            alert_webhook_url=settings.alert_webhook_url,
        )

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    @property
    def airflow_url(self) -> str:
        return self.url(self.airflow_port)

    @property
    def mlflow_url(self) -> str:
        return self.url(self.mlflow_port)

    @property
    def api_url(self) -> str:
        return self.url(self.api_port)

    @property
    def ui_url(self) -> str:
        return self.url(self.ui_port)

    @property
    def source_url(self) -> str:
        return self.discodata_url or self.url(self.emulator_port)

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"


@dataclass
class Secrets:
    """Generated once per `CO2_HOME` and kept there, never in the repository.

    The home is 0700 and the file 0600 from the moment it exists (`write_private`), so another
    user of the machine cannot read the keys even while they are being written.
    """

    jwt_secret: str
    fernet_key: str
    admin_password: str
    webhook_secret: str = ""  # the registry webhook's HMAC secret (MLflow -> prediction service)
    webhook_key: str = ""  # MLflow's key for the webhook secrets it stores (a Fernet key)

    @classmethod
    def load_or_create(cls, home: Path, admin_password: str = "") -> Secrets:
        from cryptography.fernet import Fernet

        path = private_directory(home) / "secrets.json"
        if path.exists():
            path.chmod(0o600)
            stored = cls(**json.loads(path.read_text()))
            changed = not (stored.webhook_secret and stored.webhook_key)  # a home from before webhooks
            stored.webhook_secret = stored.webhook_secret or secrets.token_urlsafe(32)
            stored.webhook_key = stored.webhook_key or Fernet.generate_key().decode()
            if admin_password and admin_password != stored.admin_password:
                stored.admin_password = admin_password
                changed = True
            if changed:
                stored.save(path)
            return stored
        created = cls(
            jwt_secret=secrets.token_urlsafe(32),
            fernet_key=Fernet.generate_key().decode(),
            admin_password=admin_password or secrets.token_urlsafe(12),
            webhook_secret=secrets.token_urlsafe(32),
            webhook_key=Fernet.generate_key().decode(),
        )
        created.save(path)
        return created

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(asdict(self)))


def airflow_environment(plan: StackPlan, keys: Secrets) -> dict[str, str]:
    """Airflow's configuration for every Airflow process of the stack, as compose sets it.

    `AIRFLOW__*` variables already in the environment win over the defaults here (ports, timeouts),
    but not over what makes the processes one platform (database, executor, secrets, folders).
    """
    airflow_home = plan.home / "airflow"
    defaults = {
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # The LocalExecutor forks this many workers up front; the DAG runs at most 3 tasks at once.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": "8974",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        # A scheduler brought back by `co2 up` after a crash resets the dead one's tasks at its next
        # orphan check once the dead one's heartbeat is 30 s old: every 30 s, not Airflow's 300 s
        # (compose sets the same).
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "8793",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "8794",
    }
    inherited = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW__")}
    fixed = {
        **airflow_base_environment(airflow_home, plan.airflow_database_url),
        "AIRFLOW__CORE__EXECUTOR": plan.executor,
        "AIRFLOW__CORE__FERNET_KEY": keys.fernet_key,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{plan.admin_user}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{plan.airflow_url}/execution/",
        "AIRFLOW__API__BASE_URL": plan.airflow_url,
        "AIRFLOW__API_AUTH__JWT_SECRET": keys.jwt_secret,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(plan.logs_dir / "airflow"),
        # Airflow's default is every interface: like every process of the stack, loopback only
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": plan.host,
    }
    # StatsD as compose sends it, to the local StatsD bridge (compose: the statsd exporter)
    fixed |= {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": plan.host,
        "AIRFLOW__METRICS__STATSD_PORT": str(plan.statsd_port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
    }
    if plan.executor == "CeleryExecutor":
        fixed["AIRFLOW__CELERY__BROKER_URL"] = plan.celery_broker_url
        fixed["AIRFLOW__CELERY__RESULT_BACKEND"] = "db+" + sqlalchemy_url(plan.airflow_database_url)
    return {**defaults, **inherited, **fixed}


def platform_environment(plan: StackPlan) -> dict[str, str]:
    """What the pipeline's tasks and the prediction service read: one registry, one source, one data folder."""
    env = {
        "MLFLOW_TRACKING_URI": plan.mlflow_url,
        "CO2_DISCODATA_URL": plan.source_url,
        "CO2_DATA_DIR": os.environ.get("CO2_DATA_DIR") or str(plan.home / "data"),
        "CO2_HOME": str(plan.home),
        "CO2_POLL_SECONDS": str(plan.poll_seconds),
        "PYTHONUNBUFFERED": "1",
        **MLFLOW_CLIENT_ENV,
    }
    return env


# --- components ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Component:
    """One process of the stack: how to start it and how to know it is healthy."""

    name: str
    command: list[str]
    env: dict[str, str]
    healthy: Callable[[], bool]
    url: str = ""
    timeout_seconds: float = 180.0
    after: tuple[str, ...] = ()  # what must be healthy (or done) before it starts


# Airflow's task processes (forked by the scheduler under the LocalExecutor, by the Celery workers
# otherwise) train models on the cores the prediction service answers on: they run at this niceness,
# so that the requests people wait on come first (compose: the workers' lower cpu_shares).
TASK_NICENESS = 10
# Airflow's processes start once its metadata database is migrated; they need nothing else to start.
MIGRATE = "airflow-db-migrate"
AFTER_MIGRATE = (MIGRATE,)


def niced(niceness: int) -> list[str]:
    """The prefix that runs a command, and all it forks, at `niceness` (coreutils' nice execs it: same pid)."""
    return ["nice", "-n", str(niceness)]


def heartbeat_healthy(plan: StackPlan, component: str) -> Callable[[], bool]:
    """The DAG processor's and triggerer's heartbeats, as the API server's health endpoint reports them."""
    return http_ok(
        f"{plan.airflow_url}/api/v2/monitor/health",
        lambda r: r.status_code == 200 and (r.json().get(component) or {}).get("status") == "healthy",
    )


def log_says(path: Path, marker: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return marker in path.read_text(errors="replace")
        except FileNotFoundError:
            return False

    return check


def prometheus_config(plan: StackPlan, alertmanager: bool = False) -> Path:
    """Prometheus as compose configures it (deploy/prometheus/prometheus.yml), on this machine's addresses.

    The same jobs, so the compose stack's alert rules and dashboards read the same series: `airflow`
    (Airflow's StatsD through the bridge), `api` and Prometheus itself (the overdue alert reads its
    oldest sample). MLflow is not scraped: the local server has no /metrics, and scraping it would
    fire CO2RegistryUnreachable. Rules are evaluated every 5 s instead of 15 s, so an alert shows
    soon after its cause on one machine; the rules themselves are compose's, unchanged. With
    `alertmanager`, what fires goes to the local Alertmanager, as compose's goes to its service.
    """
    folder = plan.home / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = {
        "airflow": plan.statsd_exporter_port,
        "api": plan.api_port,
        "prometheus": plan.prometheus_port,
    }
    config: dict[str, Any] = {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(path) for path in PROMETHEUS_RULES],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"{plan.host}:{port}"]}]} for job, port in jobs.items()
        ],
    }
    if alertmanager:
        target = f"{plan.host}:{plan.alertmanager_port}"
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
    path = folder / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


def components(plan: StackPlan, keys: Secrets) -> list[Component]:
    """The stack, each component with what it waits for (`after`); listed in a valid sequential order."""
    airflow = executable("airflow")
    co2 = executable("co2")
    platform_env = platform_environment(plan)
    airflow_env = {**platform_env, **airflow_environment(plan, keys)}
    scheduler_health_port = airflow_env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"]
    stack: list[Component] = []
    if plan.discodata_url is None:
        serve_sample = [
            *("discodata-emulator", "--csv", str(SAMPLE_CSV), "--host", plan.host),
            *("--generate-years", *map(str, OFFLINE_YEARS)),
            *("--publish-log", str(plan.home / "discodata-published.jsonl")),  # releases survive a restart
        ]
        stack.append(
            Component(
                "discodata-emulator",
                [co2, *serve_sample, "--port", str(plan.emulator_port)],
                platform_env,
                http_ok(f"{plan.url(plan.emulator_port)}/health"),
                plan.url(plan.emulator_port),
            )
        )
    exporter = plan.url(plan.statsd_exporter_port)
    stack.append(
        Component(
            "statsd-exporter",
            [
                co2,
                "statsd-exporter",
                "--host",
                plan.host,
                "--port",
                str(plan.statsd_port),
                "--metrics-port",
                str(plan.statsd_exporter_port),
                "--out",
                str(plan.logs_dir / "statsd.log"),
            ],
            {},
            http_ok(f"{exporter}/metrics"),
            exporter,
        )
    )
    artifacts = plan.home / "mlflow" / "artifacts"
    stack += [
        Component(
            "mlflow",
            mlflow_server_command(plan.host, plan.mlflow_port, plan.mlflow_database_url, artifacts),
            {**platform_env, **MLFLOW_SERVER_ENV, WEBHOOK_KEY_ENV: keys.webhook_key},
            http_ok(f"{plan.mlflow_url}/health"),
            plan.mlflow_url,
        ),
        Component(
            "airflow-apiserver",
            [airflow, "api-server", "--host", plan.host, "--port", str(plan.airflow_port), "--workers", "1"],
            airflow_env,
            http_ok(f"{plan.airflow_url}/api/v2/monitor/health"),
            plan.airflow_url,
            after=AFTER_MIGRATE,
        ),
        Component(
            "airflow-scheduler",
            [*niced(TASK_NICENESS), airflow, "scheduler"],
            airflow_env,
            http_ok(f"{plan.url(int(scheduler_health_port))}/health"),
            after=AFTER_MIGRATE,
        ),
        # healthy once the API server lists the parsed DAG (and the triggerer's heartbeat): both ask the API
        # server, so they wait for it to answer, but they start beside it
        Component(
            "airflow-dag-processor",
            [airflow, "dag-processor"],
            airflow_env,
            dag_parsed(plan, keys),
            "",
            300,
            after=AFTER_MIGRATE,
        ),
        Component(
            "airflow-triggerer",
            [airflow, "triggerer"],
            airflow_env,
            heartbeat_healthy(plan, "triggerer"),
            after=AFTER_MIGRATE,
        ),
    ]
    log_port = int(airflow_env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"])
    for number in range(1, plan.celery_workers + 1):
        hostname = f"co2-worker-{number}@%h"
        stack.append(
            Component(
                f"airflow-worker-{number}",
                [
                    *niced(TASK_NICENESS),
                    airflow,
                    "celery",
                    "worker",
                    "--celery-hostname",
                    hostname,
                    "--concurrency",
                    "4",
                ],
                {**airflow_env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_port + 10 + number)},
                log_says(plan.logs_dir / f"airflow-worker-{number}.log", " ready."),
                after=AFTER_MIGRATE,
            )
        )
    stack.append(
        Component(
            "api",
            [co2, "serve", "--host", plan.host, "--port", str(plan.api_port)],
            # MLflow tells it of each promotion (registry webhook, SQL backends), and it polls as well
            {
                **platform_env,
                "CO2_WEBHOOK_URL": f"{plan.api_url}/registry/events",
                "CO2_WEBHOOK_SECRET": keys.webhook_secret,
            },
            http_ok(f"{plan.api_url}/health"),
            plan.api_url,
        )
    )
    # the prediction page, a client of the service above (its key, if the service wants one: CO2_UI_API_KEY
    # or the first of CO2_API_KEYS), with MLflow's address for its links to runs
    stack.append(
        Component(
            "ui",
            [co2, "ui", "--host", plan.host, "--port", str(plan.ui_port)],
            {**platform_env, "CO2_UI_API_URL": plan.api_url, "CO2_UI_MLFLOW_URL": plan.mlflow_url},
            http_ok(f"{plan.ui_url}/_stcore/health"),
            plan.ui_url,
        )
    )
    alertmanager = alertmanager_executable()
    if alertmanager:
        stack.append(alertmanager_component(plan, alertmanager))
    prometheus = shutil.which("prometheus")
    if prometheus:
        stack.append(
            Component(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={prometheus_config(plan, alertmanager=alertmanager is not None)}",
                    f"--storage.tsdb.path={plan.home / 'prometheus' / 'data'}",
                    f"--web.listen-address={plan.host}:{plan.prometheus_port}",
                ],
                {},
                http_ok(f"{plan.url(plan.prometheus_port)}/-/ready"),
                plan.url(plan.prometheus_port),
            )
        )
    return stack


def alertmanager_executable() -> str | None:
    """Alertmanager's binary: `alertmanager` upstream, `prometheus-alertmanager` in Debian's package."""
    return shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")


def alertmanager_component(plan: StackPlan, executable: str) -> Component:
    """Alertmanager started as compose starts it: entrypoint.sh writes the webhook's URL into a private copy
    of deploy/alertmanager/alertmanager.yml under CO2_HOME, then runs Alertmanager on it, on loopback only
    and without clustering (no gossip port)."""
    folder = plan.home / "alertmanager"
    return Component(
        "alertmanager",
        [
            "/bin/sh",
            str(ALERTMANAGER_DIR / "entrypoint.sh"),
            executable,
            f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={folder / 'data'}",
            f"--web.listen-address={plan.host}:{plan.alertmanager_port}",
            "--cluster.listen-address=",
        ],
        {
            "ALERTMANAGER_TEMPLATE": str(ALERTMANAGER_DIR / "alertmanager.yml"),
            "ALERTMANAGER_CONFIG": str(folder / "alertmanager.yml"),
            "ALERTMANAGER_WEBHOOK_URL": plan.alert_webhook_url,
        },
        http_ok(f"{plan.url(plan.alertmanager_port)}/-/ready"),
        plan.url(plan.alertmanager_port),
    )


def dag_parsed(plan: StackPlan, keys: Secrets) -> Callable[[], bool]:
    """The DAG processor is up once `co2_retraining` is in the metadata DB without import errors."""

    def check() -> bool:
        try:
            client = AirflowClient(plan.airflow_url, plan.admin_user, keys.admin_password)
            return client.get(f"/api/v2/dags/{DAG_ID}").status_code == 200
        except httpx.HTTPError:
            return False

    return check


# --- running processes --------------------------------------------------------------------------
@dataclass
class Running:
    """A started process as `stack.json` records it; `started` tells a reused pid apart."""

    name: str
    pid: int
    started: float
    log: str
    url: str = ""

    def process(self) -> psutil.Process | None:
        try:
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.started) < 1.0 and process.status() != psutil.STATUS_ZOMBIE:
                return process
        except psutil.Error:
            pass
        return None

    def alive(self) -> bool:
        return self.process() is not None

    def tree(self) -> list[psutil.Process]:
        return process_tree(self.pid) if self.alive() else []


@dataclass
class StackState:
    home: Path
    running: dict[str, Running] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, home: Path) -> StackState:
        path = home / STATE_FILE
        if not path.exists():
            return cls(home)
        data = json.loads(path.read_text())
        return cls(home, {r["name"]: Running(**r) for r in data["running"]}, data.get("info", {}))

    def save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        data = {"running": [asdict(r) for r in self.running.values()], "info": self.info}
        (self.home / STATE_FILE).write_text(json.dumps(data, indent=2))


def launch(component: Component, log_path: Path) -> Running:
    process = spawn(component.command, log_path, component.env, cwd=PROJECT_DIR)
    started = psutil.Process(process.pid).create_time()
    log.info("component_started", component=component.name, pid=process.pid, log=str(log_path))
    return Running(component.name, process.pid, started, str(log_path), component.url)


def wait_healthy(component: Component, running: Running, stop: threading.Event | None = None) -> float:
    """Seconds until the component answered healthy; a clear error with its log's tail otherwise
    (also at once when `stop` is set: another component failed)."""
    alive = running.alive if stop is None else (lambda: running.alive() and not stop.is_set())
    try:
        seconds = wait_until_healthy(
            component.name, component.healthy, alive, Path(running.log), component.timeout_seconds
        )
    except ProcessError as exc:
        raise StackError(str(exc)) from None
    log.info("component_healthy", component=component.name, seconds=round(seconds, 1))
    return seconds


@dataclass(frozen=True)
class StartTiming:
    """When a component started and answered healthy, in seconds since `co2 up` began, and what it waited for."""

    name: str
    started_s: float
    healthy_s: float
    after: tuple[str, ...] = ()
    running_already: bool = False


class StackError(RuntimeError):
    """The stack could not be brought up; says which component and where its log is."""


PORT_SETTINGS = {
    "discodata-emulator": "CO2_EMULATOR_PORT",
    "statsd-exporter": "CO2_STATSD_EXPORTER_PORT",
    "mlflow": "CO2_MLFLOW_PORT",
    "airflow-apiserver": "CO2_AIRFLOW_PORT",
    "api": "CO2_API_PORT",
    "ui": "CO2_UI_PORT",
    "prometheus": "CO2_PROMETHEUS_PORT",
    "alertmanager": "CO2_ALERTMANAGER_PORT",
}


def _check_ports(plan: StackPlan, wanted: list[Component], state: StackState) -> None:
    """Refuse to start next to another program on our ports, naming the setting that moves us."""
    for component in wanted:
        running = state.running.get(component.name)
        if component.name not in PORT_SETTINGS or (running and running.alive()):
            continue
        port = int(component.url.rsplit(":", 1)[1])
        if not port_is_free(plan.host, port):
            raise StackError(
                f"port {port} for {component.name} is taken by another program; stop it, "
                f"or move the stack with {PORT_SETTINGS[component.name]} (see .env.example)"
            )


def write_airflow_passwords(plan: StackPlan, keys: Secrets) -> Path:
    """The admin's login where the simple auth manager reads it, 0600 from the start."""
    passwords = Path(airflow_environment(plan, keys)["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    private_directory(plan.home)
    passwords.parent.mkdir(parents=True, exist_ok=True)
    write_private(passwords, json.dumps({plan.admin_user: keys.admin_password}))
    return passwords


def migrate_airflow(plan: StackPlan, keys: Secrets) -> None:
    """Create or upgrade Airflow's metadata DB and the admin login (idempotent)."""
    env = airflow_environment(plan, keys)
    write_airflow_passwords(plan, keys)
    log_path = plan.logs_dir / "airflow-db-migrate.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log.info("airflow_db_migrate", database=_redact(plan.airflow_database_url), log=str(log_path))
    with log_path.open("ab") as handle:
        completed = subprocess.run(
            [executable("airflow"), "db", "migrate"],
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_DIR,
        )
    if completed.returncode != 0:
        raise StackError(f"`airflow db migrate` failed; its log {log_path} ends with:\n{tail(log_path)}")


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def up(settings: Settings, *, sequential: bool = False) -> tuple[StackPlan, StackState, list[StartTiming]]:
    """Start whatever of the stack is not running, each as soon as what it waits for is healthy.

    Components that wait for nothing start at once, side by side; Airflow's processes start together
    once its database is migrated; each is then waited on by its own readiness check (no sleeps).
    `sequential` starts them one after the other in list order (the old way, for comparison).
    Idempotent: components already running (by `stack.json`) are kept, so after a crash `co2 up` brings
    back just what died. Returns the plan, the state and each component's start and healthy times.
    """
    plan = StackPlan.from_settings(settings)
    private_directory(plan.home)
    keys = Secrets.load_or_create(plan.home, settings.airflow_admin_password)
    state = StackState.load(plan.home)
    wanted = components(plan, keys)
    _check_ports(plan, wanted, state)
    began = time.monotonic()
    timings: list[StartTiming] = []
    done: set[str] = set()
    pending: list[Component] = []
    for component in wanted:
        running = state.running.get(component.name)
        if running and running.alive():
            log.info("component_running", component=component.name, pid=running.pid)
            timings.append(StartTiming(component.name, 0.0, 0.0, running_already=True))
            done.add(component.name)
        else:
            pending.append(component)
    if not any(MIGRATE in component.after for component in pending):
        done.add(MIGRATE)
    if not pending:
        return plan, state, timings
    saving = threading.Lock()
    stop = threading.Event()
    info = _info(plan)

    def migrate() -> StartTiming:
        started = time.monotonic() - began
        migrate_airflow(plan, keys)
        return StartTiming(MIGRATE, started, time.monotonic() - began)

    def start(component: Component, waited_for: tuple[str, ...]) -> StartTiming:
        started = time.monotonic() - began
        running = launch(component, plan.logs_dir / f"{component.name}.log")
        with saving:
            state.running[component.name] = running
            state.info = info
            state.save()
        wait_healthy(component, running, stop)
        return StartTiming(component.name, started, time.monotonic() - began, waited_for)

    in_flight: dict[Future[StartTiming], str] = {}
    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=len(pending) + 1, thread_name_prefix="co2-up") as pool:
        if MIGRATE not in done:
            in_flight[pool.submit(migrate)] = MIGRATE
        while (pending or in_flight) and not failures:
            for component in [c for c in pending if all(d in done for d in c.after)]:
                if sequential and in_flight:
                    break
                pending.remove(component)
                # one after the other, each waits for the one before it
                waited_for = (timings[-1].name,) if sequential and timings else component.after
                in_flight[pool.submit(start, component, waited_for)] = component.name
            if not in_flight:  # a component waits for one that is not in the stack
                waits = {c.name: [d for d in c.after if d not in done] for c in pending}
                raise StackError(f"cannot start {', '.join(waits)}: they wait for {waits}")
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                name = in_flight.pop(future)
                try:
                    timings.append(future.result())
                    done.add(name)
                except (StackError, OSError) as exc:
                    failures.append(str(exc))
                    stop.set()  # the others stop waiting; what started keeps running, as `co2 status` shows
    if failures:
        raise StackError(failures[0])
    return plan, state, timings


def critical_path(timings: list[StartTiming]) -> list[StartTiming]:
    """The chain of waits that decided when the stack was up: the last to be healthy, then what it waited
    for that was healthy last, and so on."""
    by_name = {t.name: t for t in timings if not t.running_already}
    if not by_name:
        return []
    chain = [max(by_name.values(), key=lambda t: t.healthy_s)]
    while waited := [by_name[name] for name in chain[-1].after if name in by_name]:
        chain.append(max(waited, key=lambda t: t.healthy_s))
    return chain[::-1]


def _info(plan: StackPlan) -> dict[str, Any]:
    prometheus = shutil.which("prometheus")
    prometheus_url = plan.url(plan.prometheus_port) if prometheus else None
    pages = prometheus_pages(prometheus) if prometheus else ""
    alertmanager_url = plan.url(plan.alertmanager_port) if alertmanager_executable() else None
    return {
        "airflow_url": plan.airflow_url,
        "mlflow_url": plan.mlflow_url,
        "api_url": plan.api_url,
        "ui_url": plan.ui_url,
        "prometheus_url": prometheus_url,
        "prometheus_alerts_url": f"{prometheus_url}{pages}/alerts" if prometheus_url else None,
        "prometheus_targets_url": f"{prometheus_url}{pages}/targets" if prometheus_url else None,
        "alertmanager_url": alertmanager_url,
        "statsd_exporter_url": f"{plan.url(plan.statsd_exporter_port)}/metrics",
        "discodata_url": plan.source_url,
        "airflow_user": plan.admin_user,
        "executor": plan.executor,
        "celery_workers": plan.celery_workers,
        "logs": str(plan.logs_dir),
    }


@functools.lru_cache
def prometheus_pages(executable: str) -> str:
    """Where this Prometheus serves its pages: `/classic` before 3.0 (Debian's 2.x has only those), else the root.

    Debian builds Prometheus 2.x without its React UI: `/alerts` and `/targets` are 404s there, the same
    pages answer under `/classic/`, which upstream 2.x builds serve too; 3.0 dropped them for the root.
    """
    try:
        answer = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=30)
        version = (answer.stdout or answer.stderr).split("version ", 1)[1]
        major = int(version.split(".", 1)[0])
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return "/classic"
    return "" if major >= 3 else "/classic"


def down(home: Path, timeout_seconds: float = 30.0) -> list[str]:
    """Stop every component (reverse start order): SIGTERM to its process group, then SIGKILL."""
    state = StackState.load(home)
    stopped = []
    for running in reversed(list(state.running.values())):
        tree = running.tree()
        if not tree:
            continue
        stop_group(running.pid, tree, timeout_seconds)
        log.info("component_stopped", component=running.name, pid=running.pid)
        stopped.append(running.name)
    state.running.clear()
    state.save()
    return stopped


@dataclass
class ComponentStatus:
    name: str
    pid: int
    alive: bool
    memory_mb: float
    url: str
    log: str


def status(home: Path) -> tuple[list[ComponentStatus], dict[str, Any]]:
    """Each recorded component: alive or not, memory of its process tree (proportional set size)."""
    state = StackState.load(home)
    report = []
    for running in state.running.values():
        tree = running.tree()
        pss = 0
        for process in tree:
            with contextlib.suppress(psutil.Error):
                pss += process.memory_full_info().pss  # shared pages counted once across forks
        report.append(ComponentStatus(running.name, running.pid, bool(tree), pss / 2**20, running.url, running.log))
    return report, state.info


# --- Airflow's REST API -------------------------------------------------------------------------
class AirflowClient:
    """Airflow 3's public REST API as a client sees it: a JWT from `/auth/token`, then `/api/v2`."""

    def __init__(self, base_url: str, username: str, password: str, timeout_seconds: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        answer = httpx.post(
            f"{self.base_url}/auth/token",
            json={"username": username, "password": password},
            timeout=timeout_seconds,
        )
        if answer.status_code != 201:
            raise StackError(f"Airflow refused the login of {username!r} ({answer.status_code}): {answer.text[:200]}")
        token = answer.json()["access_token"]
        self.http = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout_seconds
        )

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params)

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        self.http.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        answer = self.http.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        if answer.status_code >= 400:
            raise StackError(f"Airflow refused to trigger {dag_id} ({answer.status_code}): {answer.text[:300]}")
        return str(answer.json()["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        answer = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        answer.raise_for_status()
        return str(answer.json()["state"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        answer = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        answer.raise_for_status()
        return {ti["task_id"]: ti for ti in answer.json()["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """What a task returned, or None if it returned nothing (or has not run); a step's result
        (co2.pipeline.results) as its fields."""
        answer = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
        value = answer.json().get("value") if answer.status_code == 200 else None
        # the API gives the stored form: Airflow's serde wraps a dataclass in its class name and version
        if isinstance(value, dict) and "__classname__" in value and "__data__" in value:
            return value["__data__"]
        return value

    def set_note(self, dag_id: str, run_id: str, note: str) -> None:
        """The run's note, shown on the run's page in the Airflow UI (at most 1,000 characters)."""
        answer = self.http.patch(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", params={"update_mask": "note"}, json={"note": note[:1000]}
        )
        answer.raise_for_status()

    def follow(
        self, dag_id: str, run_id: str, timeout_seconds: float = 3600.0, poll_seconds: float = 2.0
    ) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Yields (task_id, state, task instance) at each change of state, until the run ends.

        States are Airflow's names (`scheduled`, `queued`, `running`, `success`, `failed`, `upstream_failed`,
        `up_for_retry`, `skipped`...), from a task's first one: a task with no state yet is not reported.
        """
        seen: dict[str, tuple[str, int]] = {}
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            for task_id, ti in self.task_states(dag_id, run_id).items():
                if ti.get("state") is None:  # not scheduled yet: nothing to say until its first state
                    continue
                key = (str(ti["state"]), int(ti.get("try_number") or 0))
                if seen.get(task_id) != key:
                    seen[task_id] = key
                    yield task_id, key[0], ti
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                yield "__run__", state, {}
                return
            time.sleep(poll_seconds)
        raise StackError(f"run {run_id} of {dag_id} did not end within {timeout_seconds:.0f}s")


def client_for(home: Path) -> AirflowClient:
    """A logged-in client for the stack recorded under `home`."""
    state = StackState.load(home)
    if not state.info:
        raise StackError(f"no stack recorded under {home}; start one with `co2 up`")
    keys = Secrets.load_or_create(home)
    return AirflowClient(state.info["airflow_url"], state.info["airflow_user"], keys.admin_password)
