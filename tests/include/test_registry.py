"""`co2 promote` and `co2 registry` as an operator runs them (the real CLI), against a real MLflow server,
with the real prediction service following the production alias.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient

from co2.local import free_port
from co2.settings import Settings
from co2.tags import (
    PREVIOUS_PRODUCTION_TAG,
    PROMOTED_AT_TAG,
    PROMOTED_BY_TAG,
    PROMOTION_REASON_TAG,
)
from tests.serving.conftest import (  # noqa: F401  (sample_splits is a fixture)
    log_candidate,
    promote,
    ready_version,
    running_service,
    sample_splits,
    wait_for,
)

CO2 = str(Path(sys.executable).parent / "co2")
POLL_SECONDS = 3.0
LOAD_BUDGET_SECONDS = 10.0  # downloading and checking a small KNN model on this 2-core machine
REASON = "version 2 answers 40 g/km too low for plug-in hybrids"


def version_tags(version: int, decision: str) -> dict[str, str]:
    """The tags `register` writes that the listing reads (co2.pipeline.register)."""
    years = {1: (2020, 2022), 2: (2021, 2023)}[version]
    tables = {str(year): f"co2cars_{year}Fv{20 + year - 2018}" for year in range(years[0], years[1] + 1)}
    return {
        "co2.candidate": "knn_with_make",
        "co2.mae_g_km": f"{3.1 - version / 10:.3f}",
        "co2.rmse_g_km": "6.527",
        "co2.r2": "0.9847",
        "co2.years": ",".join(tables),
        "co2.eea_tables": json.dumps(tables, sort_keys=True),
        "co2.eea_tables_from": "discovered",
        "co2.promoted": "true",
        "co2.decision": decision,
        "co2.raw_sha256": "ab" * 32,
    }


@pytest.fixture(scope="module")
def two_versions(mlflow_uri: str, sample_splits: tuple[pd.DataFrame, pd.DataFrame]) -> str:  # noqa: F811
    """A registered model whose production went from version 1 to version 2, as two runs of the DAG leave it."""
    name = f"co2-registry-{uuid.uuid4().hex[:8]}"
    model_uri = log_candidate(mlflow_uri, "knn", sample_splits)
    promote(mlflow_uri, name, model_uri, version_tags(1, "no production model yet"))
    promote(mlflow_uri, name, model_uri, version_tags(2, "challenger better by 0.100 g/km than version 1"))
    return name


def co2(mlflow_uri: str, model_name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The `co2` command in a clean directory (no .env), on this registry."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CO2_")},
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "CO2_MODEL_NAME": model_name,
        "CO2_POLL_SECONDS": str(POLL_SECONDS),
    }
    home = Path(os.environ.get("TMPDIR", "/tmp"))
    return subprocess.run([CO2, *args], env=env, cwd=home, capture_output=True, text=True, timeout=300, check=False)


def client(mlflow_uri: str) -> MlflowClient:
    return MlflowClient(mlflow_uri, registry_uri=mlflow_uri)


def production(mlflow_uri: str, name: str) -> str:
    return str(client(mlflow_uri).get_model_version_by_alias(name, "production").version)


def test_a_rollback_in_one_command_and_the_service_follows_within_a_poll(mlflow_uri: str, two_versions: str) -> None:
    name = two_versions
    settings = Settings(mlflow_tracking_uri=mlflow_uri, model_name=name, poll_seconds=POLL_SECONDS)
    with running_service(settings) as url:
        wait_for(lambda: ready_version(url) == "2", 120)

        promoted = co2(mlflow_uri, name, "promote", "1", "--reason", REASON)
        assert promoted.returncode == 0, promoted.stderr
        user = getpass.getuser()
        assert f"{name}@production rolled back from version 2 to version 1 by {user}: {REASON}" in promoted.stdout
        assert production(mlflow_uri, name) == "1"
        # the service's next poll finds the alias moved, loads version 1 and swaps it in
        wait_for(lambda: ready_version(url) == "1", POLL_SECONDS + LOAD_BUDGET_SECONDS)
        loaded_at = datetime.fromisoformat(httpx.get(f"{url}/model", timeout=10).json()["loaded_at"])

    version = client(mlflow_uri).get_model_version(name, "1")
    tags = version.tags
    # within one poll (plus the load) of the moment `co2 promote` moved the alias, as recorded on the version
    after = (loaded_at - datetime.fromisoformat(tags[PROMOTED_AT_TAG])).total_seconds()
    print(f"version 1 served {after:.1f}s after the promotion (poll every {POLL_SECONDS:g}s)")
    assert after <= POLL_SECONDS + LOAD_BUDGET_SECONDS + 1  # promoted_at is to the second
    assert tags[PROMOTION_REASON_TAG] == REASON
    assert tags[PROMOTED_BY_TAG] == user
    assert tags[PREVIOUS_PRODUCTION_TAG] == "2"
    assert datetime.now(UTC) - datetime.fromisoformat(tags[PROMOTED_AT_TAG]) < timedelta(minutes=5)
    assert tags["co2.decision"] == "no production model yet"  # register's own decision is kept
    stages = {v.version: v.current_stage for v in client(mlflow_uri).search_model_versions(f"name = '{name}'")}
    assert [v for v, stage in stages.items() if stage == "Production"] == ["1"]  # legacy stage readers too

    # and forward again, later: no rollback this time
    forward = co2(mlflow_uri, name, "promote", "v2")
    assert forward.returncode == 0, forward.stderr
    assert "moved from version 1 to version 2" in forward.stdout and ": no reason given" in forward.stdout
    assert production(mlflow_uri, name) == "2"


@pytest.mark.parametrize(
    ("version", "said"),
    [
        ("7", "version 7 of {name} does not exist (versions: 1, 2); `co2 registry` lists them"),
        ("latest", "'latest' is not a version number; `co2 registry` lists those of {name}"),
        (
            "{production}",
            "version {production} of {name} is already in production; name another version (`co2 registry` lists them)",
        ),
    ],
)
def test_what_cannot_be_promoted_is_refused_in_one_line(
    mlflow_uri: str, two_versions: str, version: str, said: str
) -> None:
    before = production(mlflow_uri, two_versions)
    wanted = version.format(production=before)
    refused = co2(mlflow_uri, two_versions, "promote", wanted, "--reason", "test")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.strip() == f"co2 promote: {said.format(name=two_versions, production=before)}"
    assert production(mlflow_uri, two_versions) == before


@pytest.mark.server  # the CLI as a process
def test_an_unreachable_registry_is_refused_in_one_line() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    refused = co2(uri, "co2-emissions", "promote", "1")
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"co2 promote: MLflow at {uri} does not answer (")
    assert line.endswith("start it or fix MLFLOW_TRACKING_URI")
    listing = co2(uri, "co2-emissions", "registry")
    assert listing.returncode == 2 and "fix MLFLOW_TRACKING_URI" in listing.stderr


def test_the_listing_shows_metrics_training_window_and_decisions(mlflow_uri: str, two_versions: str) -> None:
    name = two_versions
    if production(mlflow_uri, name) != "1":
        assert co2(mlflow_uri, name, "promote", "1", "--reason", REASON).returncode == 0

    table = co2(mlflow_uri, name, "registry")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == f"{name} at {mlflow_uri}: production is version 1"
    header = ["version", "alias", "registered (UTC)", "candidate", "MAE g/km", "RMSE g/km", "R²", "trained on"]
    assert re.split(r"\s{2,}", lines[2].strip()) == header
    rows = {line.split()[0]: line for line in lines[3:] if line[:1] != " " or line.strip()[:1].isdigit()}
    assert rows["2"].split()[1] != "production" and "2.900" in rows["2"]
    assert rows["2"].endswith("2021-2023: co2cars_2021Fv23, co2cars_2022Fv24, co2cars_2023Fv25 (discovered)")
    assert rows["1"].split()[1] == "production" and "3.000" in rows["1"] and "0.9847" in rows["1"]
    assert rows["1"].endswith("2020-2022: co2cars_2020Fv22, co2cars_2021Fv23, co2cars_2022Fv24 (discovered)")
    text = table.stdout
    assert "register: promoted: challenger better by 0.100 g/km than version 1" in text
    assert "register: promoted: no production model yet" in text
    assert f"co2 promote: by {getpass.getuser()} at " in text and f"over version 2: {REASON}" in text

    listed = co2(mlflow_uri, name, "registry", "--json")
    assert listed.returncode == 0, listed.stderr
    data: dict[str, Any] = json.loads(listed.stdout)
    # what `co2 registry` printed before, unchanged ...
    assert data["model"] == name and data["tracking_uri"] == mlflow_uri
    assert data["latest_version"]["version"] == "2" and data["production_version"]["version"] == "1"
    assert data["production_version"]["mae_g_km"] == "3.000"
    # ... and every version, newest first
    assert [v["version"] for v in data["versions"]] == ["2", "1"]
    one = data["versions"][1]
    assert one["aliases"] == ["production"] and one["metrics"] == {"mae_g_km": 3.0, "rmse_g_km": 6.527, "r2": 0.9847}
    assert one["years"] == [2020, 2021, 2022] and one["tables"]["2020"] == "co2cars_2020Fv22"
    assert one["promoted_by_register"] is True and one["decision"] == "no production model yet"
    assert one["promotion_reason"] == REASON and one["previous_production_version"] == "2"

    newest = co2(mlflow_uri, name, "registry", "--json", "--limit", "1")
    assert [v["version"] for v in json.loads(newest.stdout)["versions"]] == ["2"]
