"""Prometheus' configuration and alert rules, checked by promtool and loaded by a real Prometheus."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import yaml

from tests.deploy.conftest import DEPLOY_DIR
from tests.serving.conftest import wait_for

PROMETHEUS_DIR = DEPLOY_DIR / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTS = {
    "CO2RetrainingFailed",
    "CO2RetrainingOverdue",
    "CO2ReleaseDiscoveryFallingBack",
    "CO2PredictionServiceNotReady",
    "CO2RegistryUnreachable",
    "CO2PredictionErrorRate",
    "CO2PredictionLatencyHigh",
}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promtool")
    assert executable, "promtool is missing: `make tools` installs it (Debian package prometheus)"
    return subprocess.run(
        [executable, *map(str, args)], capture_output=True, text=True, timeout=300, check=False, cwd=PROMETHEUS_DIR
    )


def test_promtool_accepts_the_configuration() -> None:
    result = promtool("check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout + result.stderr


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_jobs_are_the_stack_services() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {
        "airflow": ["statsd-exporter:9102"],
        "api": ["api:8000"],
        "mlflow": ["mlflow:5000"],
        "prometheus": ["localhost:9090"],
    }


def test_every_alert_has_unit_tests_that_fire_it_and_keep_it_silent() -> None:
    alerts = {r["alert"] for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]}
    assert alerts == ALERTS
    firing, silent = set(), set()
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test["alert_rule_test"]:
                (firing if case["exp_alerts"] else silent).add(case["alertname"])
    assert firing == ALERTS and silent == ALERTS


def test_alert_rule_unit_tests_pass() -> None:
    """`promtool test rules`: each alert fires on the series that should fire it, and only then."""
    result = promtool("test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_a_broken_alert_fails_its_unit_tests(tmp_path: Path) -> None:
    """The unit tests can fail: with the error-rate threshold moved from 1 % to 5 %, they do."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    for rules in RULE_FILES:
        (tmp_path / "rules" / rules.name).write_text(rules.read_text().replace("> 0.01", "> 0.05"))
    for tests in RULE_TESTS:
        (tmp_path / "tests" / tests.name).write_text(tests.read_text())
    result = promtool("test", "rules", *sorted((tmp_path / "tests").glob("*.yml")))
    assert result.returncode != 0
    assert "CO2PredictionErrorRate" in result.stdout + result.stderr


def test_prometheus_loads_the_configuration_and_every_rule(prometheus_url: str) -> None:
    """The real server (Debian's prometheus) starts with deploy/prometheus/ and has every alert loaded."""
    groups = httpx.get(f"{prometheus_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(loaded) == ALERTS
    assert all(rule["health"] in ("ok", "unknown") for rule in loaded.values()), loaded

    def jobs() -> set[str]:
        targets = httpx.get(f"{prometheus_url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return {target["labels"]["job"] for target in targets}

    wait_for(lambda: jobs() == {"airflow", "api", "mlflow", "prometheus"}, 30)
