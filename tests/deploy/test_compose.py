"""docker-compose.yaml and .env.example: valid for docker-compose, complete, healthy start order, no secret inside."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
import yaml

from tests.conftest import PG_ADMIN_DSN, PROJECT_DIR, _admin_execute
from tests.deploy.conftest import (
    DEPLOY_DIR,
    FAB_AUTH_MANAGER,
    INIT_CHECKED_SECRETS,
    airflow_environment,
    run_init_script,
)

COMPOSE_FILE = PROJECT_DIR / "docker-compose.yaml"
ENV_EXAMPLE = PROJECT_DIR / ".env.example"
AIRFLOW = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
SERVICES = {
    *("postgres", "redis", "mlflow", "api", "ui", "statsd-exporter", "prometheus", "alertmanager", "grafana"),
    *AIRFLOW,
}
ONE_SHOT = {"airflow-init"}
OPTIONAL = {"discodata-emulator"}  # profile "offline"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|API_KEYS|_KEY$")
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
HOST_PORTS = {
    "AIRFLOW_PORT",
    "MLFLOW_PORT",
    "API_PORT",
    "UI_PORT",
    "GRAFANA_PORT",
    "PROMETHEUS_PORT",
    "ALERTMANAGER_PORT",
    "STATSD_EXPORTER_PORT",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The compose file as docker-compose resolves it with .env.example (anchors merged, variables set)."""
    result = docker_compose("--profile", "offline", "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def docker_compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    """Debian's docker-compose on the compose file with .env.example (or another env file)."""
    executable = shutil.which("docker-compose")
    assert executable, "docker-compose is missing: `make tools` installs it (Debian package docker-compose)"
    return subprocess.run(
        [executable, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=PROJECT_DIR,
    )


def example_env() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def named_volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(target, volume) of each named volume of a service (docker-compose prints `source:target:mode`)."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target, named = volume["source"], volume["target"], volume["type"] == "volume"
        else:
            source, target = volume.split(":")[:2]
            named = not source.startswith(("/", "."))
        if named:
            found.append((target, source))
    return found


def test_docker_compose_config_is_valid_with_the_example_env() -> None:
    result = docker_compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_a_missing_secret_stops_start_up(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = tmp_path / ".env"
    env.write_text(ENV_EXAMPLE.read_text().replace("AIRFLOW_JWT_SECRET=change-me", "AIRFLOW_JWT_SECRET="))
    result = subprocess.run(
        [shutil.which("docker-compose") or "docker-compose", "--env-file", str(env), "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=PROJECT_DIR,
    )
    assert result.returncode != 0
    assert "set AIRFLOW_JWT_SECRET in .env" in result.stderr


def test_the_services_of_the_platform(resolved: dict[str, Any]) -> None:
    assert set(resolved["services"]) == SERVICES | OPTIONAL
    assert resolved["services"]["discodata-emulator"]["profiles"] == ["offline"]


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        if name not in ONE_SHOT:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, condition in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert condition == {"condition": expected}, f"{name} -> {dependency}: {condition}"
    for name in AIRFLOW - ONE_SHOT:
        depends = resolved["services"][name]["depends_on"]
        assert {"postgres", "redis", "airflow-init"} <= set(depends), name
    assert set(resolved["services"]["api"]["depends_on"]) == {"mlflow", "airflow-init"}  # init checks API_KEYS
    assert set(resolved["services"]["ui"]["depends_on"]) == {"api"}
    assert set(resolved["services"]["grafana"]["depends_on"]) == {"prometheus", "airflow-init"}


def test_airflow_runs_celery_with_shared_secrets_and_statsd_to_the_exporter(resolved: dict[str, Any]) -> None:
    environments = [resolved["services"][name]["environment"] for name in AIRFLOW]
    for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        assert len({env[key] for env in environments}) == 1, key
    env = environments[0]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379")
    assert env["AIRFLOW__METRICS__STATSD_ON"] == "true"
    assert (env["AIRFLOW__METRICS__STATSD_HOST"], env["AIRFLOW__METRICS__STATSD_PORT"]) == ("statsd-exporter", "9125")
    assert env["AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED"] == "true"  # the tags become labels
    worker = resolved["services"]["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale airflow-worker=N
    assert worker["command"] == ["celery", "worker"] or worker["command"] == "celery worker"


def test_state_lives_in_named_volumes(resolved: dict[str, Any]) -> None:
    mounts = {name: dict(named_volumes(service)) for name, service in resolved["services"].items()}
    assert mounts["postgres"]["/var/lib/postgresql/data"] == "postgres-data"
    assert mounts["mlflow"]["/opt/airflow/mlflow/artifacts"] == "mlflow-artifacts"
    assert mounts["prometheus"]["/prometheus"] == "prometheus-data"
    assert mounts["alertmanager"]["/alertmanager"] == "alertmanager-data"  # silences, and its configuration's copy
    assert mounts["grafana"]["/var/lib/grafana"] == "grafana-data"
    for name in AIRFLOW:
        assert mounts[name]["/opt/airflow/co2-data"] == "co2-data", name  # every worker sees every snapshot


def test_mlflow_serves_artifacts_on_postgres_for_the_service_names(resolved: dict[str, Any]) -> None:
    mlflow = resolved["services"]["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--serve-artifacts" in command and "--expose-prometheus" in command
    allowed = re.search(r"--allowed-hosts=(\S+)", command)
    assert allowed and {"mlflow:5000", "localhost:5000"} <= set(allowed.group(1).split(","))
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:")
    api_env = resolved["services"]["api"]["environment"]
    assert api_env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_containers_do_not_run_as_root(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        if name in ("api", "ui"):  # their image sets USER 10001 (Dockerfile.api)
            assert "user" not in service
            continue
        assert service.get("user") not in (None, "", "root", "0", "0:0"), name


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    """Every secret-looking setting comes from .env through a `${VAR:?...}` that stops start-up when unset."""
    text = COMPOSE_FILE.read_text()
    found = 0
    for match in re.finditer(r"^\s*([A-Z0-9_]+):\s*(.+)$", text, re.MULTILINE):
        key, value = match.groups()
        if SECRET_NAME.search(key) and not key.endswith(("_FILE", "_USER")):
            found += 1
            assert (value.startswith("${") and ":?" in value) or key == "CO2_API_KEYS", f"{key}: {value}"
    assert found >= 8
    for credentials in re.findall(r"://([^@/\s]+)@", text):  # passwords inside URLs
        assert re.fullmatch(r"\$\{[A-Z_]+(:-[a-z]+)?\}:\$\{[A-Z_]+:\?[^}]+\}", credentials), credentials


def test_the_example_env_documents_every_variable_and_holds_no_secret() -> None:
    values = example_env()
    lines = COMPOSE_FILE.read_text().splitlines()
    settings = "\n".join(line.split(" #")[0] for line in lines if not line.strip().startswith("#"))
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", settings))  # $${X} is the container's own variable
    assert used <= set(values), f"not in .env.example: {sorted(used - set(values))}"
    assert set(values) >= HOST_PORTS
    for key, value in values.items():
        if SECRET_NAME.search(key) and key != "CO2_API_KEYS":
            assert value in ("", "change-me"), f"{key} must be a placeholder in .env.example"
    text = ENV_EXAMPLE.read_text()
    for key in values:  # each setting has its explanation
        block = text[: text.index(f"\n{key}=")].rsplit("\n\n", 1)[-1]
        assert "#" in block, f"{key} has no comment"


def test_the_airflow_image_version_is_the_locked_one() -> None:
    lock = (PROJECT_DIR / "uv.lock").read_text()
    version = re.search(r'name = "apache-airflow"\nversion = "([^"]+)"', lock)
    assert version
    assert f"FROM apache/airflow:{version.group(1)}-python3.11" in (PROJECT_DIR / "Dockerfile.airflow").read_text()


def test_init_script_creates_a_database_and_owner_per_service() -> None:
    """deploy/postgres/init-databases.sh for real, against the test PostgreSQL."""
    suffix = uuid.uuid4().hex[:8]
    env_names = {
        "AIRFLOW_DB_USER": f"co2_test_airflow_user_{suffix}",
        "AIRFLOW_DB_PASSWORD": f"pw-{suffix}",
        "AIRFLOW_DB_NAME": f"co2_test_airflow_db_{suffix}",
        "MLFLOW_DB_USER": f"co2_test_mlflow_user_{suffix}",
        "MLFLOW_DB_PASSWORD": f"pw'{suffix}",  # a quote in a password must not break the SQL
        "MLFLOW_DB_NAME": f"co2_test_mlflow_db_{suffix}",
    }
    host = PG_ADMIN_DSN.split("@", 1)[1].split("/", 1)[0]
    admin = PG_ADMIN_DSN.split("://", 1)[1].split("@", 1)[0].split(":")[0]
    try:
        result = subprocess.run(
            ["bash", str(DEPLOY_DIR / "postgres" / "init-databases.sh")],
            env={
                "PATH": "/usr/bin:/bin",
                "POSTGRES_USER": admin,
                "PGHOST": host.split(":")[0],
                "PGPORT": host.split(":")[1] if ":" in host else "5432",
                **env_names,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        for service in ("AIRFLOW", "MLFLOW"):
            conn = psycopg2.connect(
                host=host.split(":")[0],
                port=host.split(":")[1] if ":" in host else 5432,
                user=env_names[f"{service}_DB_USER"],
                password=env_names[f"{service}_DB_PASSWORD"],
                dbname=env_names[f"{service}_DB_NAME"],
            )
            with conn, conn.cursor() as cur:
                cur.execute("CREATE TABLE probe (id int)")  # the owner may create its tables
            conn.close()
    finally:
        for service in ("AIRFLOW", "MLFLOW"):
            _admin_execute(f'DROP DATABASE IF EXISTS "{env_names[f"{service}_DB_NAME"]}" WITH (FORCE)')
            _admin_execute(f'DROP ROLE IF EXISTS "{env_names[f"{service}_DB_USER"]}"')


def test_airflow_init_refuses_the_placeholders(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {
        **airflow_environment(tmp_path, "sqlite:///unused.db", 8080, 8125),
        "PATH": "/usr/bin:/bin",
        "AIRFLOW__CORE__FERNET_KEY": "change-me",
    }
    result = run_init_script(env, {"AIRFLOW_ADMIN_USER": "admin", "AIRFLOW_ADMIN_PASSWORD": "a-password"})
    assert result.returncode == 1
    assert "AIRFLOW__CORE__FERNET_KEY is empty or still the placeholder" in result.stderr
    assert set(INIT_CHECKED_SECRETS) <= set(example_env())


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"AIRFLOW_ADMIN_PASSWORD": ""}, "AIRFLOW_ADMIN_PASSWORD is empty"),
        ({"API_KEYS": '["change-me"]'}, "API_KEYS is empty or still holds the placeholder"),
        (
            {"AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER},
            "not FAB's FabAuthManager",
        ),
    ],
)
def test_airflow_init_stops_before_anything_without_what_the_admin_needs(
    tmp_path, change: dict[str, str], named: str
) -> None:  # type: ignore[no-untyped-def]
    """Checked before `airflow db migrate` runs: a PATH without Airflow proves nothing else was tried."""
    env = {**airflow_environment(tmp_path, "sqlite:///unused.db", 8080, 8125), "PATH": "/usr/bin:/bin"}
    result = run_init_script(env, {"AIRFLOW_ADMIN_USER": "admin", "AIRFLOW_ADMIN_PASSWORD": "a-password", **change})
    assert result.returncode == 1
    assert named in result.stderr and "airflow: command not found" not in result.stderr


def test_airflow_uses_fab_users_and_roles_with_the_admin_from_init(resolved: dict[str, Any]) -> None:
    for name in AIRFLOW:
        env = resolved["services"][name]["environment"]
        assert env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER, name
        assert not [key for key in env if "SIMPLE_AUTH_MANAGER" in key], name
    init_env = resolved["services"]["airflow-init"]["environment"]
    assert {"AIRFLOW_ADMIN_USER", "AIRFLOW_ADMIN_PASSWORD"} <= set(init_env)
    script = (DEPLOY_DIR / "airflow" / "init.sh").read_text()
    assert re.search(r"airflow users create --username \"\$AIRFLOW_ADMIN_USER\" --role Admin", script)
    assert "--password" not in script  # on stdin: never in a process list


def published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host address, host port) of each published port; an empty address is every interface."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append((str(port.get("host_ip", "")), str(port.get("published", ""))))
        else:
            parts = str(port).split("/")[0].split(":")
            found.append((parts[0] if len(parts) == 3 else "", parts[-2] if len(parts) > 1 else ""))
    return found


def test_published_ports_are_on_loopback_unless_asked(resolved: dict[str, Any], tmp_path) -> None:  # type: ignore[no-untyped-def]
    ports = {name: published(service) for name, service in resolved["services"].items() if "ports" in service}
    assert set(ports) == {
        *("airflow-apiserver", "api", "ui", "grafana", "mlflow", "prometheus", "alertmanager", "statsd-exporter")
    }
    assert {address for found in ports.values() for address, _ in found} == {"127.0.0.1"}
    exposed = tmp_path / ".env"
    exposed.write_text(ENV_EXAMPLE.read_text().replace("PUBLISH_ADDRESS=127.0.0.1", "PUBLISH_ADDRESS=0.0.0.0"))
    result = docker_compose("config", env_file=exposed)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    addresses = {name: {address for address, _ in published(services[name])} for name in ports}
    assert addresses == {
        "airflow-apiserver": {"0.0.0.0"},  # FAB login
        "api": {"0.0.0.0"},  # API keys
        "grafana": {"0.0.0.0"},  # Grafana login
        "mlflow": {"127.0.0.1"},  # no login of its own: never exposed by PUBLISH_ADDRESS
        "ui": {"127.0.0.1"},  # no login, and it holds an API key
        "prometheus": {"127.0.0.1"},
        "alertmanager": {"127.0.0.1"},
        "statsd-exporter": {"127.0.0.1"},
    }


def test_the_prediction_api_requires_keys(resolved: dict[str, Any], tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = tmp_path / ".env"
    env.write_text(ENV_EXAMPLE.read_text().replace("API_KEYS=change-me", 'API_KEYS=["k-1", "k-2"]'))
    result = docker_compose("config", env_file=env)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["services"]["api"]["environment"]["CO2_API_KEYS"] == '["k-1", "k-2"]'
    env.write_text(ENV_EXAMPLE.read_text().replace("API_KEYS=change-me", "API_KEYS="))
    result = docker_compose("config", env_file=env)
    assert result.returncode != 0 and "set API_KEYS in .env" in result.stderr


def test_the_prediction_page_calls_the_api_as_co2_up_runs_it(resolved: dict[str, Any], tmp_path: Path) -> None:
    """compose's `ui` runs `co2 ui` from the API image against the api service, with API_KEYS (the page
    sends the first, server-side); `co2 up` runs the same command on loopback against its own service."""
    from co2.settings import Settings
    from co2.stack import Secrets, StackPlan, components

    ui, api = resolved["services"]["ui"], resolved["services"]["api"]
    assert ui["image"] == api["image"] and ui["build"]["dockerfile"] == "Dockerfile.api"
    assert ui["command"] == ["co2", "ui", "--host", "0.0.0.0", "--port", "8501"]
    assert ui["environment"]["CO2_UI_API_URL"] == "http://api:8000"
    assert ui["environment"]["MLFLOW_TRACKING_URI"] == api["environment"]["MLFLOW_TRACKING_URI"]  # report figures
    assert "/_stcore/health" in " ".join(ui["healthcheck"]["test"])  # Streamlit's own health endpoint
    env = tmp_path / ".env"
    env.write_text(ENV_EXAMPLE.read_text().replace("API_KEYS=change-me", 'API_KEYS=["k-1", "k-2"]'))
    result = docker_compose("config", env_file=env)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["services"]["ui"]["environment"]["CO2_API_KEYS"] == '["k-1", "k-2"]'

    plan = StackPlan.from_settings(Settings(home=tmp_path / "home"))
    local = {c.name: c for c in components(plan, Secrets("jwt", "fernet", "password"))}
    assert local["ui"].command[1:] == ["ui", "--host", "127.0.0.1", "--port", str(plan.ui_port)]
    assert local["ui"].env["CO2_UI_API_URL"] == plan.api_url and local["ui"].url == plan.ui_url
    assert list(local).index("ui") > list(local).index("api")  # started once the service is healthy


def test_prometheus_sends_alerts_to_alertmanager_which_reads_the_webhook_url_from_env(
    resolved: dict[str, Any], tmp_path: Path
) -> None:
    """compose's Prometheus points at the alertmanager service; the service starts through entrypoint.sh with
    CO2_ALERT_WEBHOOK_URL from .env (tests/deploy/test_alertmanager.py runs the same script and binary)."""
    prometheus = yaml.safe_load((DEPLOY_DIR / "prometheus" / "prometheus.yml").read_text())
    (targets,) = [c["targets"] for a in prometheus["alerting"]["alertmanagers"] for c in a["static_configs"]]
    assert targets == ["alertmanager:9093"]
    alertmanager = resolved["services"]["alertmanager"]
    assert alertmanager["entrypoint"] == ["/bin/sh", "/etc/alertmanager/entrypoint.sh"]
    assert alertmanager["command"][0] == "/bin/alertmanager"
    config = next(arg for arg in alertmanager["command"] if arg.startswith("--config.file="))
    assert config == f"--config.file={alertmanager['environment']['ALERTMANAGER_CONFIG']}"
    assert "--cluster.listen-address=" in alertmanager["command"]
    assert alertmanager["environment"]["ALERTMANAGER_WEBHOOK_URL"] == ""  # .env.example: sent nowhere
    env = tmp_path / ".env"
    env.write_text(
        ENV_EXAMPLE.read_text().replace("CO2_ALERT_WEBHOOK_URL=", "CO2_ALERT_WEBHOOK_URL=https://h.example/a")
    )
    result = docker_compose("config", env_file=env)
    assert result.returncode == 0, result.stderr
    configured = yaml.safe_load(result.stdout)["services"]["alertmanager"]["environment"]
    assert configured["ALERTMANAGER_WEBHOOK_URL"] == "https://h.example/a"


def test_prometheus_lifecycle_api_is_off_everywhere(resolved: dict[str, Any], tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Neither the compose stack's Prometheus nor `co2 up`'s can be stopped or reloaded over HTTP."""
    from co2.settings import Settings
    from co2.stack import Secrets, StackPlan, components

    commands = [" ".join(map(str, s.get("command") or [])) for s in resolved["services"].values()]
    assert any("--config.file=/etc/prometheus/prometheus.yml" in c for c in commands)
    plan = StackPlan.from_settings(Settings(home=tmp_path / "home"))
    local = {c.name: c.command for c in components(plan, Secrets("jwt", "fernet", "password"))}
    assert "prometheus" in local, "prometheus is missing: `make tools` installs it (Debian package prometheus)"
    assert f"--web.listen-address=127.0.0.1:{plan.prometheus_port}" in local["prometheus"]
    for command in [*commands, " ".join(local["prometheus"])]:
        assert "--web.enable-lifecycle" not in command


def test_mlflow_runs_with_the_compose_arguments_and_exposes_metrics(mlflow_stack: str) -> None:
    """The compose file's MLflow arguments work with the locked MLflow; Prometheus finds /metrics there."""
    assert httpx.get(f"{mlflow_stack}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30).status_code == 200
    metrics = httpx.get(f"{mlflow_stack}/metrics", timeout=30)
    assert metrics.status_code == 200
    assert "mlflow_http_request_total" in metrics.text


VIEWER_DETAILS = ("--email", "alice@example.org", "--firstname", "Alice", "--lastname", "Viewer")


def test_airflow_init_creates_the_admin_with_fab_roles(postgres_database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """deploy/airflow/init.sh for real on a fresh PostgreSQL database: the admin, then a second start
    with a new password, then a viewer added the way the README says."""
    from werkzeug.security import check_password_hash

    dsn = postgres_database(f"fab_{uuid.uuid4().hex[:6]}")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **airflow_environment(tmp_path, dsn.replace("postgresql://", "postgresql+psycopg2://"), 8080, 8125),
    }

    def password_hash(username: str) -> str:
        conn = psycopg2.connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT password FROM ab_user WHERE username = %s", (username,))
                return str(cur.fetchone()[0])
        finally:
            conn.close()

    def users() -> dict[str, str]:
        listed = subprocess.run(
            ["airflow", "users", "list", "--output", "json"], env=env, capture_output=True, text=True, timeout=300
        )
        assert listed.returncode == 0, listed.stderr[-2000:]
        table = next(line for line in reversed(listed.stdout.splitlines()) if line.startswith("[{"))  # after logs
        return {row["username"]: ",".join(row["roles"]) for row in json.loads(table)}

    first = run_init_script(env, {"AIRFLOW_ADMIN_USER": "admin", "AIRFLOW_ADMIN_PASSWORD": "first-pw-1"})
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "administrator admin created with the Admin role" in first.stdout
    assert users() == {"admin": "Admin"}
    assert check_password_hash(password_hash("admin"), "first-pw-1")

    again = run_init_script(env, {"AIRFLOW_ADMIN_USER": "admin", "AIRFLOW_ADMIN_PASSWORD": "second-pw-2"})
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "administrator admin exists" in again.stdout
    assert check_password_hash(password_hash("admin"), "second-pw-2")

    viewer = subprocess.run(  # README: adding a viewer
        [*("airflow", "users", "create", "--username", "alice", "--role", "Viewer"), *VIEWER_DETAILS],
        input="alice-pw-3\nalice-pw-3\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert viewer.returncode == 0, viewer.stderr[-2000:]
    assert users() == {"admin": "Admin", "alice": "Viewer"}
