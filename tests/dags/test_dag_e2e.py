"""The DAG end to end through `dag.test()`: real emulator, real MLflow on PostgreSQL, real Airflow DB.

One successful run establishes production; the fault runs then prove that nothing is lost.
"""

from __future__ import annotations

import os
import re
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from co2.files import read_json
from tests.conftest import run_emulator
from tests.dags.conftest import run

pytestmark = pytest.mark.e2e
FORCED = '{"force_retrain": true}'  # production was trained on these very tables: train anyway


@pytest.fixture(scope="module")
def platform(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Where this module's runs write: their own data dir and registered model."""
    return {
        "mlflow_uri": mlflow_uri,
        "data_dir": tmp_path_factory.mktemp("e2e-data"),
        "model_name": f"co2-emissions-e2e-{os.getpid()}",
    }


def production_version(platform: dict[str, Any]) -> str:
    client = MlflowClient(platform["mlflow_uri"])
    return str(client.get_model_version_by_alias(platform["model_name"], "production").version)


def snapshots(platform: dict[str, Any]) -> set[Path]:
    return set((platform["data_dir"] / "raw").glob("*/snapshot.parquet"))


@pytest.fixture(scope="module")
def first_run(dag, platform: dict[str, Any], emulator) -> dict[str, str]:  # type: ignore[no-untyped-def]
    states = run(dag, platform, emulator.url)
    assert states["__run__"] == "success", states
    return states


def test_first_run_promotes_a_model_that_predicts_real_cars(
    first_run: dict[str, str], platform: dict[str, Any], sample_frame: pd.DataFrame
) -> None:
    assert set(first_run.values()) == {"success"}
    client = MlflowClient(platform["mlflow_uri"])
    version = client.get_model_version_by_alias(platform["model_name"], "production")
    tags = version.tags
    assert tags["co2.promoted"] == "true" and "no production model yet" in tags["co2.decision"]
    assert float(tags["co2.mae_g_km"]) <= 3.0
    assert len(tags["co2.raw_sha256"]) == 64 and tags["co2.validation"] == "passed"
    assert client.get_model_version(platform["model_name"], version.version).current_stage == "Production"

    model = mlflow.pyfunc.load_model(f"models:/{platform['model_name']}@production")
    cars = sample_frame[sample_frame["Ewltp (g/km)"].notna()].sample(300, random_state=1)
    inputs = pd.DataFrame(
        {
            "mass_kg": cars["M (kg)"],
            "engine_capacity_cm3": cars["Ec (cm3)"],
            "engine_power_kw": cars["Ep (KW)"],
            "eco_innovation_savings_g_km": cars["Erwltp (g/km)"],
            "fuel_consumption_l_100km": cars["Fc"],
            "fuel_type": cars["Ft"],
            "make": cars["Mk"],
        }
    )
    answered = model.predict(inputs)  # CO2 with its interval, and how it was made
    predicted = answered["co2_wltp_g_km"].to_numpy()
    actual = cars["Ewltp (g/km)"].to_numpy()
    electric = cars["Ft"].isin(["ELECTRIC", "HYDROGEN"]).to_numpy()
    assert (predicted[electric] == 0).all() and (answered["method"][electric] == "zero_emission_rule").all()
    # only hybrids whose fuel consumption is not given are left unanswered: nothing tells their kind
    ambiguous = (answered["method"] == "ambiguous").to_numpy()
    assert (cars["Ft"].str.endswith("/ELECTRIC") & cars["Fc"].isna()).to_numpy()[ambiguous].all()
    assert ambiguous.mean() < 0.1 and np.isnan(predicted[ambiguous]).all()
    burns = ~electric & ~ambiguous
    relative_error = abs(predicted[burns] - actual[burns]) / actual[burns]
    # as registered: only the seven basic fields, fuel consumption as each member state reported it
    assert (relative_error < 0.15).mean() > 0.85
    assert pd.Series(relative_error).median() < 0.05
    assert 90 < predicted[burns].mean() < 160
    inside = (answered["co2_lower_g_km"] <= actual) & (actual <= answered["co2_upper_g_km"])
    assert inside[~ambiguous].mean() > 0.8


class _Tables(HTMLParser):
    """The cells of each <table> of a page, row by row (the standard library's parser: no network, no lxml)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_first_run_leaves_a_readable_report_on_the_winners_run(
    first_run: dict[str, str], platform: dict[str, Any], tmp_path: Path
) -> None:
    from co2.pipeline.train import DIGEST_CHARS

    client = MlflowClient(platform["mlflow_uri"])
    version = client.get_model_version_by_alias(platform["model_name"], "production")
    run_id = version.run_id
    assert f"runs/{run_id}/artifacts/report/report.html" in version.description

    folder = Path(client.download_artifacts(run_id, "report", str(tmp_path)))
    names = {path.name for path in folder.iterdir()}
    candidates = [
        f"candidate_{family}{make}.png"
        for family in ("random_forest", "linear_regression", "knn")
        for make in ("", "_with_make")
    ]
    assert {"report.html", "summary.json", "data_profile.json", "data.png", "candidates.png", *candidates} <= names
    for name in names - {"report.html", "summary.json", "data_profile.json"}:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "drift.png" not in names  # the first model: nothing to compare the data with

    page = (folder / "report.html").read_text()
    # self-contained: every figure embedded, nothing fetched from anywhere
    assert not re.findall(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", page) and "url(" not in page
    assert page.count('src="data:image/png;base64,') == len(names) - 3
    assert "no production model yet" in page

    tables = _Tables()
    tables.feed(page)
    header, *rows = tables.tables[0]
    assert header[:4] == ["candidate", "mae_g_km", "rmse_g_km", "r2"]
    runs = {r.info.run_name: r for r in client.search_runs([client.get_run(run_id).info.experiment_id])}
    assert len(rows) == 6
    for row in rows:
        logged = runs[row[0]].data.metrics
        for column, cell in zip(header[1:4], row[1:4], strict=True):
            assert float(cell) == logged[column], (row[0], column)
    removed = dict(tables.tables[1][1:])  # what preprocessing removed, per rule
    lineage = read_json(Path(client.download_artifacts(run_id, "lineage.json", str(tmp_path))))
    assert {rule: int(n) for rule, n in removed.items()} == lineage["removed_by_rule"]

    winner = client.get_run(run_id)
    inputs = {(d.dataset.name, d.dataset.digest) for d in winner.inputs.dataset_inputs}
    for split in ("train", "test"):
        assert (split, lineage[split]["sha256"][:DIGEST_CHARS]) in inputs
    # the metrics are the logged model's too, next to MLflow's own weighted evaluation of it
    model = client.get_logged_model(winner.outputs.model_outputs[0].model_id)
    on_model = {m.key: m.value for m in model.metrics}
    assert on_model["mae_g_km"] == winner.data.metrics["mae_g_km"]
    assert on_model["mean_absolute_error"] == pytest.approx(winner.data.metrics["mae_g_km"], abs=5e-4)


def test_transient_500s_are_retried_and_the_run_succeeds(first_run, dag, platform, emulator) -> None:  # type: ignore[no-untyped-def]
    httpx.post(f"{emulator.url}/_emulator/faults", json={"mode": "error500", "count": 3}).raise_for_status()
    before = snapshots(platform)
    states = run(dag, platform, emulator.url, conf={"force_retrain": True})  # the same data as production's
    assert states["__run__"] == "success", states
    assert httpx.get(f"{emulator.url}/_emulator/faults").json()["count"] == 0  # all three were served
    assert len(snapshots(platform) - before) == 1 and before <= snapshots(platform)


def test_source_that_keeps_failing_fails_download_and_keeps_production(  # type: ignore[no-untyped-def]
    first_run, dag, platform, emulator, smtp_server
) -> None:
    version = production_version(platform)
    before = {p: p.read_bytes() for p in snapshots(platform)}
    httpx.post(f"{emulator.url}/_emulator/faults", json={"mode": "error500", "count": 10_000}).raise_for_status()
    download = dag.get_task("download")
    retries, download.retries = download.retries, 0  # the client's own retries are under test here
    try:  # failure mails go to a real SMTP server on loopback
        states = run(dag, platform, emulator.url, CO2_HTTP_RETRIES="2", **smtp_server.env("ops@example.org"))
    finally:
        download.retries = retries
        httpx.post(f"{emulator.url}/_emulator/faults", json={"mode": "none"}).raise_for_status()
    assert states["__run__"] == "failed"
    assert states["download"] == "failed"
    assert states["validate"] == states["register"] == "upstream_failed"
    assert production_version(platform) == version
    assert {p: p.read_bytes() for p in snapshots(platform)} == before  # nothing written, nothing lost
    # Airflow called the DAG's on_failure_callback: one mail, for the task that failed (not those after it)
    ((recipients, mail),) = smtp_server.messages
    assert recipients == ["ops@example.org"]
    run_id = re.fullmatch(r"\[co2\] co2_retraining: task download failed \(run (manual__\S+)\)", mail["Subject"])
    assert run_id, mail["Subject"]
    body = mail.get_content()
    assert f"The task download of the DAG co2_retraining failed in run {run_id.group(1)}" in body
    assert re.search(rf"Discodata\w*Error: discodata at {re.escape(emulator.url)} failed 3 times .* HTTP 500", body)
    assert re.search(r"Task log: http\S+/dags/co2_retraining/runs/manual__\S+/tasks/download\?try_number=1", body)


def test_out_of_range_data_fails_validation_and_keeps_production(first_run, dag, platform, sample_frame) -> None:  # type: ignore[no-untyped-def]
    from co2.settings import Settings

    version = production_version(platform)
    broken = sample_frame.copy()
    broken.loc[broken.index[::10], "M (kg)"] = -1.0
    server = run_emulator(broken, Settings())
    try:
        states = run(dag, platform, server.url)
    finally:
        server.shutdown()
    assert states["download"] == "success" and states["validate"] == "failed"
    assert states["preprocess"] == states["register"] == "upstream_failed"
    assert production_version(platform) == version
    reports = sorted((platform["data_dir"] / "reports").glob("*/validation_*/validation.json"))
    failed = [c for c in read_json(reports[-1])["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["range[M (kg)]"]
    assert "outside, min -1.0" in failed[0]["observed"]


def test_worse_challenger_is_registered_but_not_promoted(first_run, dag, platform, sample_frame) -> None:  # type: ignore[no-untyped-def]
    from co2.settings import Settings

    version = production_version(platform)
    partial = sample_frame.sample(frac=0.2, random_state=7)  # an early, partial release of the year
    server = run_emulator(partial, Settings())
    try:
        states = run(dag, platform, server.url, CO2_MIN_ROWS="100")
    finally:
        server.shutdown()
    assert states["__run__"] == "success", states
    assert production_version(platform) == version
    client = MlflowClient(platform["mlflow_uri"])
    newest = max(client.search_model_versions(f"name = '{platform['model_name']}'"), key=lambda v: int(v.version))
    assert int(newest.version) > int(version)
    assert newest.tags["co2.promoted"] == "false"
    assert "challenger is not better" in newest.tags["co2.decision"]
    # its report measures the data against production's: a random fifth of the same year has not shifted
    with tempfile.TemporaryDirectory() as tmp:
        summary = read_json(Path(client.download_artifacts(newest.run_id, "report/summary.json", tmp)))
        assert client.download_artifacts(newest.run_id, "report/drift.png", tmp)
    assert f"version {version}" in summary["shift_reference"] and summary["promote"] is False
    shifts = {s["feature"]: s for s in summary["shifts"]}
    assert {"mass_kg", "engine_power_kw", "fuel_type", "co2_wltp_g_km"} <= set(shifts)
    assert shifts["fuel_type"]["status"] != "shifted" and shifts["mass_kg"]["status"] != "shifted"
    metrics = client.get_run(newest.run_id).data.metrics
    assert metrics["drift_psi.mass_kg"] == shifts["mass_kg"]["psi"]


def test_forced_promotion_moves_production(first_run, dag, platform, sample_frame) -> None:  # type: ignore[no-untyped-def]
    from co2.settings import Settings

    version = production_version(platform)
    partial = sample_frame.sample(frac=0.2, random_state=7)
    server = run_emulator(partial, Settings())
    try:
        states = run(dag, platform, server.url, conf={"force_promotion": True}, CO2_MIN_ROWS="100")
    finally:
        server.shutdown()
    assert states["__run__"] == "success", states
    assert int(production_version(platform)) > int(version)
    client = MlflowClient(platform["mlflow_uri"])
    assert client.get_model_version(platform["model_name"], version).current_stage == "Archived"


def test_tasks_send_their_figures_to_statsd(first_run, platform, emulator, airflow_db) -> None:  # type: ignore[no-untyped-def]
    """`airflow dags test` with `[metrics] statsd_on`: the pipeline's own figures reach a UDP listener."""
    import socket
    import subprocess
    import sys

    from tests.conftest import PROJECT_DIR

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.5)
    env = {
        **os.environ,
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(listener.getsockname()[1]),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        "CO2_DISCODATA_URL": emulator.url,
        "MLFLOW_TRACKING_URI": platform["mlflow_uri"],
        "CO2_DATA_DIR": str(platform["data_dir"]),
        "CO2_MODEL_NAME": platform["model_name"],
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "dags", "test", "co2_retraining", "--conf", FORCED],
        env=env,
        cwd=PROJECT_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    names: set[str] = set()
    while process.poll() is None:
        try:
            names.add(listener.recv(65536).decode().split(":")[0])
        except TimeoutError:
            continue
    listener.close()
    assert process.returncode == 0
    for expected in (
        "airflow.co2.download.rows",
        "airflow.co2.download.registrations",
        "airflow.co2.validate.failures",
        "airflow.co2.train.random_forest.rmse_g_km",
        "airflow.co2.train.knn_with_make.mae_g_km",
        "airflow.co2.register.promoted",
        "airflow.co2.register.production_version",
    ):
        assert expected in names, sorted(n for n in names if ".co2." in n)
