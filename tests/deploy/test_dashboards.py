"""Grafana's provisioning and dashboards, and every PromQL expression of the dashboards and the alert rules.

Each expression may only read series that really exist in the stack: the prediction service's /metrics, the
StatsD mapping applied to a real Airflow run, MLflow's /metrics, Prometheus' own /metrics and `up`. The
labels it matches and groups by must exist on them. Prometheus (promtool and the server) must accept it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy.conftest import DEPLOY_DIR
from tests.deploy.promql import Expression, dashboard_expressions, exposition_series, parse, rule_expressions
from tests.deploy.statsd_exporter import StatsdExporter

GRAFANA_DIR = DEPLOY_DIR / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
RULE_FILES = sorted((DEPLOY_DIR / "prometheus" / "rules").glob("*.yml"))
EXPRESSIONS = [e for path in DASHBOARDS for e in dashboard_expressions(path)] + [
    e for path in RULE_FILES for e in rule_expressions(path)
]
Known = dict[str, list[dict[str, str]]]


@pytest.fixture(scope="module")
def known_series(api_metrics_text: str, exporter: StatsdExporter, mlflow_stack: str, prometheus_url: str) -> Known:
    """Series name -> label sets, with the `job` and `instance` labels Prometheus adds when it scrapes."""
    httpx.get(f"{mlflow_stack}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30).raise_for_status()
    sources = {
        "api": exposition_series(api_metrics_text),
        "airflow": exporter.label_sets(),
        "mlflow": exposition_series(httpx.get(f"{mlflow_stack}/metrics", timeout=30).text),
        "prometheus": exposition_series(httpx.get(f"{prometheus_url}/metrics", timeout=30).text),
    }
    known: Known = defaultdict(list)
    for job, series in sources.items():
        for name, label_sets in series.items():
            known[name] += [{**labels, "job": job, "instance": f"{job}:port"} for labels in label_sets]
        known["up"].append({"job": job, "instance": f"{job}:port"})
    return known


def test_dashboards_are_provisioned_from_files_with_the_prometheus_datasource() -> None:
    datasource = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    assert (source["type"], source["uid"], source["url"]) == ("prometheus", "prometheus", "http://prometheus:9090")
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "co2.yml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == "/etc/grafana/dashboards"
    compose = yaml.safe_load((DEPLOY_DIR.parent / "docker-compose.yaml").read_text())["services"]["grafana"]
    assert "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro" in compose["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in compose["volumes"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] and not dashboard["editable"]
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]


def test_the_dashboards_show_what_operators_need() -> None:
    titles = {json.loads(p.read_text())["title"]: p for p in DASHBOARDS}
    assert set(titles) == {"Retraining pipeline", "Prediction service"}
    pipeline = " ".join(e.text for e in dashboard_expressions(titles["Retraining pipeline"]))
    service = " ".join(e.text for e in dashboard_expressions(titles["Prediction service"]))
    for needed in (
        "airflow_dagrun_duration_seconds_count",  # run outcomes
        "airflow_dagrun_duration_seconds_sum",  # run durations
        "airflow_task_duration_seconds_sum",
        'airflow_task_finished_total{dag_id="co2_retraining"}',  # includes state="failed"
        "co2_download_rows",
        "co2_candidate_rmse_g_km",
        "co2_production_rmse_g_km",
        "time() - max(co2_retraining_last_success_timestamp_seconds)",
    ):
        assert needed in pipeline, needed
    for needed in (
        "rate(co2_http_requests_total",
        'status=~"5.."',
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "co2_model_version",
        "time() - min(co2_registry_last_success_timestamp_seconds)",
        "co2_predicted_wltp_g_km_bucket",
        "co2_input_out_of_training_range_total",
    ):
        assert needed in service, needed


@pytest.mark.parametrize("expression", EXPRESSIONS, ids=lambda e: e.source)
def test_expression_reads_only_real_series_and_labels(expression: Expression, known_series: Known) -> None:
    selectors, grouping = parse(expression.promql)
    assert selectors, f"no series in {expression.text}"
    labels_of_expression: set[str] = set()
    for selector in selectors:
        label_sets = known_series.get(selector.metric)
        assert label_sets, f"{selector.metric} is produced by no component of the stack ({expression.source})"
        available = {label for labels in label_sets for label in labels}
        labels_of_expression |= available
        for label, operator, value in selector.matchers:
            assert label in available, f"{selector.metric} has no label {label!r} ({sorted(available)})"
            values = {labels.get(label) for labels in label_sets}
            if operator == "=":
                assert value in values, f"{selector.metric}{{{label}={value!r}}} never seen: {sorted(map(str, values))}"
            elif operator == "=~":
                re.compile(value)
    assert grouping <= labels_of_expression, f"grouping by {grouping - labels_of_expression} ({expression.source})"


def test_prometheus_accepts_every_expression(tmp_path: Path, prometheus_url: str) -> None:
    """promtool checks each expression as a rule, and the real server evaluates each without an error."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make tools` installs it (Debian package prometheus)"
    rules = [{"record": f"check:expression_{i}", "expr": e.promql} for i, e in enumerate(EXPRESSIONS)]
    path = tmp_path / "expressions.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "expressions", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
    for expression in EXPRESSIONS:
        answer = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expression.promql}, timeout=30)
        assert answer.json()["status"] == "success", (expression.source, answer.text)
