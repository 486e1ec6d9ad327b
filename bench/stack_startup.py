"""Benchmark: `co2 up` to a healthy platform, and a second `co2 up` on the running one.

Each start is a fresh platform home with its own PostgreSQL databases (Airflow's and MLflow's, created
here and dropped at the end) on free loopback ports, as a new user gets it: databases migrated, every
component started and waited on by its readiness check. Baseline, measured in the same run:
`co2 up --sequential`, every component started after the previous one is healthy. Printed: each
start's total, per component when it started and when it answered healthy, the critical path, and
the second `co2 up`.

Targets: `co2 up` to healthy in under 45 s; a second `co2 up` on a running stack in under 2 s.

    python bench/stack_startup.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR / "include"))

from co2 import local  # noqa: E402

CO2 = str(Path(sys.executable).parent / "co2")
PG_ADMIN_DSN = os.environ.get("CO2_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
LINE = re.compile(r"^  (\S+) +([0-9.]+) -> +([0-9.]+)", re.MULTILINE)


def admin(sql: str) -> None:
    import psycopg2

    connection = psycopg2.connect(PG_ADMIN_DSN)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


def environment(home: Path, databases: list[str]) -> dict[str, str]:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CO2_", "MLFLOW_"))}
    ports = {
        name: str(local.free_port())
        for name in (
            "CO2_AIRFLOW_PORT",
            "CO2_MLFLOW_PORT",
            "CO2_API_PORT",
            "CO2_UI_PORT",
            "CO2_EMULATOR_PORT",
            "CO2_PROMETHEUS_PORT",
            "CO2_ALERTMANAGER_PORT",
            "CO2_STATSD_PORT",
            "CO2_STATSD_EXPORTER_PORT",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
        )
    }
    return {
        **clean,
        **ports,
        "CO2_HOME": str(home),
        "CO2_AIRFLOW_DATABASE_URL": f"{base}/{databases[0]}",
        "CO2_MLFLOW_DATABASE_URL": f"{base}/{databases[1]}",
    }


def co2(env: dict[str, str], *args: str) -> tuple[float, str]:
    began = time.perf_counter()
    completed = subprocess.run([CO2, *args], env=env, capture_output=True, text=True, timeout=900, check=False)
    seconds = time.perf_counter() - began
    if completed.returncode != 0:
        raise SystemExit(f"co2 {' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr[-3000:]}")
    return seconds, completed.stdout


def start(label: str, *flags: str) -> dict[str, float]:
    """One cold start on a fresh home and fresh databases; then a second `co2 up`; then `co2 down`."""
    databases = [f"co2_bench_{name}_{uuid.uuid4().hex[:8]}" for name in ("airflow", "mlflow")]
    for database in databases:
        admin(f'CREATE DATABASE "{database}"')
    try:
        with tempfile.TemporaryDirectory(prefix="co2-bench-up-") as tmp:
            env = environment(Path(tmp) / "home", databases)
            try:
                seconds, output = co2(env, "up", *flags)
                again, said = co2(env, "up")
            finally:
                subprocess.run([CO2, "down"], env=env, capture_output=True, timeout=300, check=False)
    finally:
        for database in databases:
            admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    assert "already up" in said, said
    print(
        f"\n{label}: `co2 up {' '.join(flags)}` {seconds:.1f} s wall (command included), second `co2 up` {again:.2f} s"
    )
    for name, started, healthy in LINE.findall(output):
        print(f"  {name:<24} started {float(started):5.1f} s  healthy {float(healthy):5.1f} s")
    path = re.search(r"critical path: (.+)$", output, re.MULTILINE)
    print(f"  critical path: {path.group(1) if path else '?'}")
    return {"up": seconds, "again": again}


def main() -> int:
    baseline = start("baseline, sequential", "--sequential")
    parallel = start("parallel (default)")
    print("\nsummary (same machine, same run)")
    for what, key, target in (("co2 up to healthy", "up", "< 45 s"), ("second co2 up", "again", "< 2 s")):
        print(f"  {what:<20} baseline {baseline[key]:6.2f} s   parallel {parallel[key]:6.2f} s   target {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
