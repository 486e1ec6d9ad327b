"""Airflow's metadata database for DAG tests: a PostgreSQL database of the session's own, migrated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
