"""`co2 up` end to end: the real Airflow, MLflow, prediction service and Prometheus as processes.

The tests run in order on one platform: a first triggered run promotes; a second, triggered from the
Airflow UI's form in a real browser, finds nothing new and trains nothing; a new EEA year published on
the local discodata server reaches the service through the watcher, its Asset event and the run the
scheduler starts on it; the pages a user opens work (the service's docs
without a network, Prometheus from the README's links, MLflow's candidates with their metrics); a
failed run fires its Prometheus alert through the StatsD bridge; a run survives its scheduler being
killed; `co2 down` leaves nothing behind, and the same home comes back with the CeleryExecutor and a
worker that runs the training tasks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import mlflow.sklearn
import numpy as np
import pandas as pd
import psutil
import pytest
import yaml
from mlflow import MlflowClient

from co2.experiment import EXPERIMENT_KIND_TAG, MODEL_TRAINING
from co2.mlflow_utils import download_version
from co2.stack import DAG_ID, PROMETHEUS_RULES, TASK_NICENESS
from co2_model import columns as col
from co2_model.families import FAMILIES
from co2_model.inputs import EXAMPLE_CAR
from tests.conftest import PROJECT_DIR
from tests.platform.conftest import Browser, LocalPlatform

pytestmark = pytest.mark.timeout(1800)
TRAIN_TASKS = {f"train_{family}" for family in FAMILIES}
MODEL = "co2-emissions"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ALERTS = [
    rule["alert"]
    for path in PROMETHEUS_RULES
    for g in yaml.safe_load(path.read_text())["groups"]
    for rule in g["rules"]
]


def run_to_end(platform: LocalPlatform, run_id: str, timeout: float = 900) -> tuple[str, dict[str, dict[str, Any]]]:
    client = platform.airflow()
    state = "running"
    for task_id, task_state, _ in client.follow(DAG_ID, run_id, timeout_seconds=timeout):
        if task_id == "__run__":
            state = task_state
    return state, client.task_states(DAG_ID, run_id)


def registry(platform: LocalPlatform) -> MlflowClient:
    """A client of the platform's MLflow only (never the process-wide default another test set)."""
    return MlflowClient(platform.info["mlflow_url"], registry_uri=platform.info["mlflow_url"])


def production_version(platform: LocalPlatform) -> str:
    client = registry(platform)
    return str(client.get_model_version_by_alias(MODEL, "production").version)


def wait_served(platform: LocalPlatform, version: str, seconds: float = 30) -> float:
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        if platform.served_version() == version:
            return time.monotonic() - began
        time.sleep(0.2)
    raise AssertionError(f"service still serves {platform.served_version()}, not version {version}")


def raw_snapshots(platform: LocalPlatform) -> dict[str, str]:
    raw = platform.home / "data" / "raw"
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(raw.glob("*/snapshot.parquet"))}


def held_out_cars(platform: LocalPlatform, run_id: str, count: int = 300) -> pd.DataFrame:
    """The run's own test split, its real EEA year only (rows the model never trained on), as the pipeline
    wrote it: generated years never judge a model."""
    test = pd.read_parquet(platform.airflow().xcom(DAG_ID, run_id, "preprocess")["test_path"])
    return test[test[col.YEAR] == 2021].head(count)


@pytest.fixture(scope="module")
def started(local_platform: LocalPlatform) -> dict[str, Any]:
    began = time.monotonic()
    output = local_platform.co2("up").stdout
    return {"seconds": time.monotonic() - began, "output": output}


def test_up_starts_every_component_and_says_where(local_platform: LocalPlatform, started: dict[str, Any]) -> None:
    assert set(local_platform.running()) == {
        "discodata-emulator",
        "statsd-exporter",
        "mlflow",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "api",
        "ui",
        "alertmanager",
        "prometheus",
    }
    info = local_platform.info
    for url in (
        info["airflow_url"],
        info["mlflow_url"],
        info["api_url"],
        info["ui_url"],
        info["prometheus_alerts_url"],
        info["alertmanager_url"],
    ):
        assert url in started["output"]
    assert "Airflow login" in started["output"] and str(local_platform.home / "logs") in started["output"]
    # each component's start and readiness, and the chain of waits that decided when the stack was up
    for name in local_platform.running():
        assert re.search(rf"^  {re.escape(name)} +[0-9.]+ -> +[0-9.]+", started["output"], re.MULTILINE), name
    path = re.search(r"critical path: (.+)$", started["output"], re.MULTILINE)
    assert path and path.group(1).split(" -> ")[-1] in local_platform.running()
    health = httpx.get(f"{info['airflow_url']}/api/v2/monitor/health").json()
    assert {health[k]["status"] for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == {"healthy"}
    status = local_platform.co2("status")
    assert "STOPPED" not in status.stdout and "total" in status.stdout

    pids = local_platform.running()
    again = local_platform.co2("up").stdout  # on a running stack: starts nothing, still says where
    assert "already up" in again and info["mlflow_url"] in again and "critical path" not in again
    assert local_platform.running() == pids
    # a wrong password is refused: the API is not open
    refused = httpx.post(f"{info['airflow_url']}/auth/token", json={"username": "admin", "password": "wrong"})
    assert refused.status_code == 401
    print(f"\nco2 up to healthy: {started['seconds']:.0f}s\n{status.stdout}")


def test_triggered_run_promotes_and_the_service_follows(
    local_platform: LocalPlatform, started: dict[str, Any], tmp_path: Path
) -> None:
    assert local_platform.served_version() is None  # nothing in production yet: not ready
    assert httpx.get(f"{local_platform.info['api_url']}/ready").status_code == 503

    client = local_platform.airflow()
    began = time.monotonic()
    run_id = client.trigger(DAG_ID, {})
    state, tasks = run_to_end(local_platform, run_id)
    promoted_after = time.monotonic() - began
    assert state == "success", {t: ti["state"] for t, ti in tasks.items()}
    assert {t for t, ti in tasks.items() if ti["state"] == "success"} == {
        "discover",
        "anything_new",
        "download",
        "validate",
        "preprocess",
        *TRAIN_TASKS,
        "compare",
        "register",
        "report",
    }

    version = production_version(local_platform)
    tags = registry(local_platform).get_model_version(MODEL, version).tags
    assert tags["co2.promoted"] == "true"
    assert tags["co2.years"] == "2021,2022,2023"  # offline: the real sample and two generated years
    served_after = wait_served(local_platform, version, seconds=30)

    test = held_out_cars(local_platform, run_id)
    cars = [{k: v for k, v in row.items() if pd.notna(v)} for row in test[col.MODEL_INPUT_COLUMNS].to_dict("records")]
    answer = httpx.post(f"{local_platform.info['api_url']}/predict/batch", json={"cars": cars}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-model-version"] == version
    served = np.array([p["co2_wltp_g_km"] for p in answer.json()["predictions"]])
    local = download_version(registry(local_platform), local_platform.info["mlflow_url"], MODEL, version, str(tmp_path))
    answered = mlflow.sklearn.load_model(local).predict(pd.DataFrame(cars).reindex(columns=col.MODEL_INPUT_COLUMNS))
    direct = answered["co2_wltp_g_km"].to_numpy()  # the model answers CO2 with its interval and method
    np.testing.assert_allclose(served, direct, atol=0.005 + 1e-9)  # the service answers in 0.01 g/km
    mae = float(np.abs(served - test[col.TARGET].to_numpy()).mean())
    assert mae < 6.0, mae  # unweighted over configurations; the registry's weighted MAE is lower
    statsd = (local_platform.home / "logs" / "statsd.log").read_text()
    assert "airflow.co2.register.promoted" in statsd and "airflow.dagrun.duration.success" in statsd
    print(f"\ntrigger to promotion: {promoted_after:.0f}s; promotion to served: {served_after:.1f}s; MAE {mae:.2f}")


def prometheus_query(platform: LocalPlatform, query: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{platform.info['prometheus_url']}/api/v1/query", params={"query": query}, timeout=30)
    return list(answer.json()["data"]["result"])


def wait_for_series(platform: LocalPlatform, query: str, seconds: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while not (found := prometheus_query(platform, query)) and time.monotonic() < deadline:
        time.sleep(1)
    assert found, f"Prometheus has no {query} after {seconds:.0f}s"
    return found


def test_prometheus_scrapes_the_service_and_airflow(local_platform: LocalPlatform) -> None:
    prometheus = local_platform.info["prometheus_url"]
    deadline = time.monotonic() + 60
    scraped = 0.0
    while time.monotonic() < deadline and scraped < 300:  # the 300 cars of the test before
        answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": "sum(co2_predictions_total)"}).json()
        scraped = float(answer["data"]["result"][0]["value"][1]) if answer["data"]["result"] else 0.0
        time.sleep(1)
    assert scraped >= 300, scraped
    targets = httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
    assert {t["labels"]["job"]: t["health"] for t in targets} == {"airflow": "up", "api": "up", "prometheus": "up"}

    # Airflow's StatsD through the bridge, under the names compose's exporter gives them
    runs = 'airflow_dagrun_duration_seconds_count{job="airflow", dag_id="co2_retraining", state="success"}'
    assert float(wait_for_series(local_platform, runs)[0]["value"][1]) >= 1
    (success,) = wait_for_series(local_platform, "co2_retraining_last_success_timestamp_seconds")
    assert time.time() - float(success["value"][1]) < 3600
    rules = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
    loaded = {rule["name"]: rule for group in rules for rule in group["rules"]}
    assert set(loaded) == set(ALERTS), "the compose stack's alert rules are loaded"
    for name in ("CO2RetrainingFailed", "CO2RetrainingOverdue"):  # readable series, nothing to fire yet
        assert (loaded[name]["health"], loaded[name]["state"]) == ("ok", "inactive"), loaded[name]


def test_second_run_triggered_from_the_airflow_ui_form_finds_nothing_new(
    local_platform: LocalPlatform, browser: Browser
) -> None:
    """Log in, open the DAG, open its Trigger form and submit it as it opens: every param's default is valid.
    Production was trained on these very tables: the run stops after discovery, a success, and says why."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    before = production_version(local_platform)
    versions = len(registry(local_platform).search_model_versions(f"name = '{MODEL}'"))
    airflow = local_platform.info["airflow_url"]
    password = json.loads((local_platform.home / "secrets.json").read_text())["admin_password"]
    browser.open(f"{airflow}/dags/{DAG_ID}")
    browser.wait(ec.presence_of_element_located((By.NAME, "username"))).send_keys(local_platform.info["airflow_user"])
    browser.driver.find_element(By.NAME, "password").send_keys(password)
    browser.driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    browser.wait(ec.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid=trigger-dag-button]"))).click()
    submit = browser.wait(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=trigger-dag-submit]")))
    browser.wait_for_text("Run Parameters", "years", "tables", "source", "force_retrain", "force_promotion")
    browser.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", submit)
    browser.shot("airflow-trigger-form")
    assert submit.is_enabled(), "the Trigger button is disabled: a param's default does not pass the form"
    submit.click()
    browser.wait(ec.url_contains("/runs/"))
    run_id = unquote(urlparse(browser.driver.current_url).path.rsplit("/runs/", 1)[1].split("/")[0])

    state, tasks = run_to_end(local_platform, run_id)
    assert state == "success", {t: ti["state"] for t, ti in tasks.items()}
    assert tasks["discover"]["state"] == tasks["anything_new"]["state"] == "success"
    assert {tasks[t]["state"] for t in ("download", "preprocess", *TRAIN_TASKS, "register", "report")} == {"skipped"}
    conf = local_platform.airflow().get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()["conf"]
    assert conf == {  # the defaults, as they opened
        "years": [],
        "tables": None,
        "source": None,
        "force_retrain": False,
        "force_promotion": False,
    }, conf
    reason = local_platform.airflow().xcom(DAG_ID, run_id, "discover")["reason"]
    assert reason.startswith(f"nothing new: production version {before} was trained on co2cars_2021Fv24"), reason
    browser.open(f"{airflow}/dags/{DAG_ID}/runs/{run_id}/tasks/anything_new")
    browser.wait_for_text("anything_new")
    browser.shot("airflow-run-nothing-new")

    assert production_version(local_platform) == before
    assert len(registry(local_platform).search_model_versions(f"name = '{MODEL}'")) == versions  # nothing trained
    time.sleep(3)  # longer than a poll
    assert local_platform.served_version() == before
    (nothing_new,) = wait_for_series(local_platform, "co2_discovery_nothing_new")
    assert nothing_new["value"][1] == "1"


def test_a_new_eea_year_reaches_the_service_through_the_watcher(local_platform: LocalPlatform) -> None:
    """Publish 2024 on the local discodata server; the watcher's run emits its Asset event; the scheduler
    starts co2_retraining on it; that run trains on 2022-2024, promotes, and the service serves it."""
    before = production_version(local_platform)
    client = local_platform.airflow()
    began = time.monotonic()
    published = local_platform.co2("discodata-publish", "co2cars_2024Pv29")
    assert "published co2cars_2024Pv29" in published.stdout

    watch = client.trigger("co2_eea_releases", {})  # its daily run, now
    for task_id, state, _ in client.follow("co2_eea_releases", watch, timeout_seconds=300):
        if task_id == "__run__":
            assert state == "success"
    assert client.task_states("co2_eea_releases", watch)["check_releases"]["state"] == "success"

    deadline = time.monotonic() + 120
    runs: list[dict[str, Any]] = []
    while not runs and time.monotonic() < deadline:
        listed = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns", run_type="asset_triggered").json()["dag_runs"]
        runs = [r for r in listed if r["state"] in ("queued", "running", "success", "failed")]
        time.sleep(1)
    assert len(runs) == 1, "the scheduler did not start co2_retraining on the watcher's Asset event"
    state, tasks = run_to_end(local_platform, runs[0]["dag_run_id"])
    assert state == "success", {t: ti["state"] for t, ti in tasks.items()}
    version = production_version(local_platform)
    assert int(version) > int(before)
    tags = registry(local_platform).get_model_version(MODEL, version).tags
    assert json.loads(tags["co2.eea_tables"]) == {
        "2022": "co2cars_2022Fv26",
        "2023": "co2cars_2023Pv27",
        "2024": "co2cars_2024Pv29",
    }
    wait_served(local_platform, version, seconds=60)
    print(f"\nrelease published to new version served: {time.monotonic() - began:.0f}s")


def test_the_service_docs_work_without_a_network(local_platform: LocalPlatform, browser: Browser) -> None:
    """/docs lists every operation in a browser that resolves no name but loopback, and asks nothing elsewhere."""
    from selenium.webdriver.common.by import By

    api = local_platform.info["api_url"]
    schema = httpx.get(f"{api}/openapi.json", timeout=30).json()
    operations = [(method.upper(), path) for path, item in schema["paths"].items() for method in item]
    browser.open(f"{api}/docs")
    browser.wait_for_text(*(path for _, path in operations))
    shown = {
        (
            block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
            block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path"),
        )
        for block in browser.driver.find_elements(By.CSS_SELECTOR, ".opblock")
    }
    browser.shot("service-docs-offline")
    assert set(operations) <= shown, shown
    elsewhere = [
        url for url in browser.requested() if url.startswith("http") and urlparse(url).hostname not in LOOPBACK
    ]
    assert elsewhere == [], f"/docs asked for {elsewhere}"


def test_the_prediction_page_answers_a_car_typed_into_its_form(local_platform: LocalPlatform, browser: Browser) -> None:
    """The page `co2 up` starts, in a real browser that resolves no name but loopback: a car typed into its
    form gets the service's own answer on screen, with the model version and its place among the training cars."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec

    info = local_platform.info
    version = local_platform.served_version()
    assert version, "nothing in production: the run of test_triggered_run_promotes_and_the_service_follows first"
    assert f"{info['ui_url']}" in local_platform.co2("status").stdout
    browser.open(info["ui_url"])
    browser.wait_for_text("CO₂ emissions of new cars", "One car", "Many cars", "The model", "Predict CO₂")
    mass = browser.wait(  # the widgets' scripts load after the page's text
        ec.element_to_be_clickable((By.CSS_SELECTOR, "input[aria-label='Mass in running order, kg']"))
    )
    mass.send_keys(Keys.CONTROL, "a")  # a modifier holds until the end of its send_keys
    mass.send_keys(Keys.DELETE, "1450")
    (predict,) = [
        button for button in browser.driver.find_elements(By.TAG_NAME, "button") if button.text == "Predict CO₂"
    ]
    predict.click()

    car = {**EXAMPLE_CAR, "fuel_type": "petrol", "mass_kg": 1450}
    expected = httpx.post(f"{info['api_url']}/predict", json=car, timeout=30).json()
    text = browser.wait_for_text(
        f"{expected['co2_wltp_g_km']:.1f} g/km", f"co2-emissions version {version}", "Among the"
    )
    assert "Traceback" not in text
    answer = browser.driver.find_element(By.CSS_SELECTOR, "[data-testid=stMetric]")
    browser.driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", answer)
    browser.wait(
        lambda driver: driver.find_elements(
            By.CSS_SELECTOR, "[data-testid=stVegaLiteChart] canvas, [data-testid=stVegaLiteChart] svg"
        )
    )
    browser.shot("prediction-page-one-car")

    (about,) = [tab for tab in browser.driver.find_elements(By.CSS_SELECTOR, "[role=tab]") if tab.text == "The model"]
    # the tabs are above the answer scrolled to, and the page's toolbar covers the top edge
    browser.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", about)
    browser.wait(ec.element_to_be_clickable(about)).click()  # the version, and its run report's figures
    browser.wait_for_text(
        f"version {version}", "Training window", "Every candidate's MAE", "The data it was trained on"
    )
    figures = browser.wait(
        lambda driver: [
            image
            for image in driver.find_elements(By.CSS_SELECTOR, "[data-testid=stImage] img")
            if driver.execute_script("return arguments[0].naturalWidth", image) > 0
        ]
    )
    assert len(figures) >= 3
    browser.driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", figures[0])
    browser.shot("prediction-page-the-model")
    elsewhere = [
        url for url in browser.requested() if url.startswith("http") and urlparse(url).hostname not in LOOPBACK
    ]
    assert elsewhere == [], f"the page asked for {elsewhere}"


def readme_prometheus_links(platform: LocalPlatform) -> list[str]:
    """The README's Prometheus addresses (default port), on this platform's port."""
    readme = (PROJECT_DIR / "README.md").read_text()
    links = sorted(set(re.findall(r"http://127\.0\.0\.1:9090(/[\w/-]*)", readme)))
    return [f"{platform.info['prometheus_url']}{path}" for path in links]


def test_the_readme_prometheus_links_open(local_platform: LocalPlatform, browser: Browser) -> None:
    links = readme_prometheus_links(local_platform)
    info = local_platform.info
    assert {info["prometheus_alerts_url"], info["prometheus_targets_url"]} <= set(links), links  # co2 up's too
    for url in links:
        assert httpx.get(url, timeout=30).status_code == 200, url
    browser.open(info["prometheus_alerts_url"])
    browser.wait_for_text(*ALERTS)
    browser.shot("prometheus-alerts")
    browser.open(info["prometheus_targets_url"])
    text = browser.wait_for_text("airflow", "api", "prometheus")
    assert text.count("UP") >= 3, text[:2000]
    browser.shot("prometheus-targets")


def test_mlflow_opens_the_candidates_with_their_metrics(
    local_platform: LocalPlatform, started: dict[str, Any], browser: Browser
) -> None:
    """The link `co2 up` prints opens the model-training view, metrics as columns, best MAE first."""
    from selenium.webdriver.common.by import By

    (link,) = re.findall(r"MLflow training runs\s+(\S+)", started["output"])
    client = registry(local_platform)
    experiment = client.get_experiment_by_name(MODEL)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    runs = client.search_runs([experiment.experiment_id], order_by=["metrics.mae_g_km ASC"])
    assert len(runs) >= 6
    for run in runs:  # logged to the decimals that mean something
        metrics = run.data.metrics
        assert metrics["mae_g_km"] == round(metrics["mae_g_km"], 3) and metrics["r2"] == round(metrics["r2"], 4)

    browser.open(link)
    text = browser.wait_for_text(
        "Model training", "Candidates by MAE", "mae_g_km", "rmse_g_km", "r2", runs[0].info.run_name
    )
    browser.shot("mlflow-candidates")
    assert "No data available" not in text and "Token Usage" not in text  # not the GenAI view
    headers = [h.text for h in browser.driver.find_elements(By.CSS_SELECTOR, "[role=columnheader]")]
    assert {"mae_g_km", "rmse_g_km", "r2"} <= set(headers), headers
    assert f"{runs[0].data.metrics['mae_g_km']:g}" in text  # the best candidate's MAE, on the first screen


def test_the_version_links_to_its_run_report_in_mlflow(local_platform: LocalPlatform, browser: Browser) -> None:
    """The production version's description links to the report; MLflow's UI shows it, figures and all,
    and nothing in it asks for anything beyond this machine."""
    from selenium.webdriver.common.by import By

    version = local_platform.served_version()
    assert version, "nothing in production: the run of test_triggered_run_promotes_and_the_service_follows first"
    described = registry(local_platform).get_model_version(MODEL, version)
    (link,) = re.findall(r"\]\((#/experiments/\d+/runs/\w+/artifacts/report/report\.html)\)", described.description)
    assert described.run_id in link
    browser.open(f"{local_platform.info['mlflow_url']}/{link}")
    browser.wait(lambda driver: driver.find_elements(By.TAG_NAME, "iframe"))
    browser.driver.switch_to.frame(browser.driver.find_element(By.TAG_NAME, "iframe"))
    try:
        text = browser.wait_for_text("Decision", "Candidates", "The data", "What changed since production")
        images = browser.driver.find_elements(By.TAG_NAME, "img")
        assert len(images) >= 8 and all(
            browser.driver.execute_script("return arguments[0].naturalWidth", image) > 0 for image in images
        )
    finally:
        browser.driver.switch_to.default_content()
    browser.shot("mlflow-run-report")
    assert described.tags["co2.candidate"] in text
    elsewhere = [
        url for url in browser.requested() if url.startswith("http") and urlparse(url).hostname not in LOOPBACK
    ]
    assert elsewhere == [], f"the report asked for {elsewhere}"


def test_a_failed_run_fires_the_retraining_alert(local_platform: LocalPlatform, browser: Browser) -> None:
    """`co2 trigger` on years the source has no table for: the run fails at discovery, Prometheus alerts.

    The series comes from Airflow's own StatsD through the bridge, as compose's exporter gives it.
    """
    from airflow.utils.state import TaskInstanceState

    states = {state.value for state in TaskInstanceState}
    completed = local_platform.co2("trigger", "--years", "1999", check=False)
    assert completed.returncode == 1, completed.stdout + completed.stderr[-2000:]
    progress = re.findall(r"^\s+\d+s\s+(\w+)\s+(\S+)", completed.stdout, flags=re.MULTILINE)
    assert progress, completed.stdout
    assert {state for _, state in progress} <= states, progress  # Airflow's names, never None
    last = dict(progress)
    assert last["discover"] == "failed" and last["register"] == "upstream_failed", progress
    assert re.search(r"run \S+: failed after", completed.stdout)

    failed = 'airflow_dagrun_duration_seconds_count{job="airflow", dag_id="co2_retraining", state="failed"}'
    wait_for_series(local_platform, failed)
    deadline = time.monotonic() + 60
    firing: list[dict[str, Any]] = []
    while not firing and time.monotonic() < deadline:
        alerts = httpx.get(f"{local_platform.info['prometheus_url']}/api/v1/alerts", timeout=30).json()
        firing = [a for a in alerts["data"]["alerts"] if a["labels"]["alertname"] == "CO2RetrainingFailed"]
        firing = [a for a in firing if a["state"] == "firing"]
        time.sleep(1)
    assert firing and firing[0]["labels"]["dag_id"] == "co2_retraining", firing
    # ... and sends it to the platform's Alertmanager (no CO2_ALERT_WEBHOOK_URL here: kept, sent nowhere)
    alertmanager = f"{local_platform.info['alertmanager_url']}/api/v2/alerts"
    deadline = time.monotonic() + 60
    while "CO2RetrainingFailed" not in {a["labels"]["alertname"] for a in httpx.get(alertmanager, timeout=30).json()}:
        assert time.monotonic() < deadline, "CO2RetrainingFailed did not reach Alertmanager"
        time.sleep(1)
    browser.open(local_platform.info["prometheus_alerts_url"])
    browser.wait_for_text("CO2RetrainingFailed (1 active)")
    browser.shot("prometheus-alert-firing")


def test_killed_scheduler_comes_back_and_the_run_finishes(local_platform: LocalPlatform) -> None:
    client = local_platform.airflow()
    run_id = client.trigger(DAG_ID, {"force_retrain": True})
    snapshots: dict[str, str] = {}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        tasks = client.task_states(DAG_ID, run_id)
        if tasks.get("train_random_forest", {}).get("state") == "running":
            snapshots = raw_snapshots(local_platform)
            break
        time.sleep(0.5)
    assert snapshots, "training never started"
    scheduler = local_platform.running()["airflow-scheduler"]
    # the training task processes it forked yield the cores to the prediction service
    niceness = set()
    for child in psutil.Process(scheduler).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            niceness.add(child.nice())
    assert niceness == {TASK_NICENESS}, niceness
    assert psutil.Process(local_platform.running()["api"]).nice() == 0
    os.killpg(scheduler, signal.SIGKILL)  # the scheduler and the task processes it forked
    psutil.wait_procs([psutil.Process(scheduler)], timeout=10)
    assert local_platform.co2("status", check=False).returncode == 3  # status sees the dead component

    local_platform.co2("up")  # brings back just what died
    assert local_platform.running()["airflow-scheduler"] != scheduler
    state, tasks = run_to_end(local_platform, run_id)
    assert state == "success", {t: (ti["state"], ti["try_number"]) for t, ti in tasks.items()}
    assert tasks["train_random_forest"]["try_number"] >= 2  # the killed attempt was retried
    after = raw_snapshots(local_platform)
    assert {path: after.get(path) for path in snapshots} == snapshots  # nothing overwritten or lost
    first_snapshot = client.xcom(DAG_ID, run_id, "download")["snapshot_path"]
    assert first_snapshot in snapshots  # the run went on with its first snapshot


def test_down_leaves_nothing_running(local_platform: LocalPlatform) -> None:
    pids = local_platform.running()
    assert pids
    output = local_platform.co2("down").stdout
    assert "scheduler" in output
    assert local_platform.running() == {}
    assert local_platform.processes_of_home() == []
    for pid in pids.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_celery_worker_runs_the_training_tasks(local_platform: LocalPlatform) -> None:
    """The same home again with the CeleryExecutor: state survived, the worker runs the tasks."""
    local_platform.co2("up", "--executor", "CeleryExecutor", "--celery-workers", "1")
    assert "airflow-worker-1" in local_platform.running()
    before = production_version(local_platform)
    client = local_platform.airflow()
    run_id = client.trigger(DAG_ID, {"force_retrain": True})
    state, tasks = run_to_end(local_platform, run_id)
    assert state == "success", {t: ti["state"] for t, ti in tasks.items()}
    worker_log = Path(local_platform.info["logs"]) / "airflow-worker-1.log"
    executed = [line for line in worker_log.read_text(errors="replace").splitlines() if "workload in Celery" in line]
    for task_id in TRAIN_TASKS:
        assert any(f"task_id='{task_id}'" in line for line in executed), (task_id, executed[-3:])
    assert production_version(local_platform) == before  # same data: nothing promoted
    local_platform.co2("down")
    assert local_platform.processes_of_home() == []
