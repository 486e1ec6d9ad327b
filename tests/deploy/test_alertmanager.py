"""Alertmanager: its configuration checked by amtool, its entrypoint for real, and a real alert end to end.

A real Prometheus (Debian's) evaluates deploy/prometheus/rules/ against a target that serves a failed run
of co2_retraining, sends what fires to a real Alertmanager (Debian's) started through
deploy/alertmanager/entrypoint.sh as compose and `co2 up` start it, which POSTs it to a webhook receiver
in this test. Only the grouping delays are shortened (seconds instead of minutes).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from co2.local import ManagedProcess, free_port, start
from co2.settings import Settings
from co2.stack import Secrets, StackPlan, alertmanager_executable, components, prometheus_config
from tests.deploy.conftest import DEPLOY_DIR
from tests.serving.conftest import wait_for

pytestmark = pytest.mark.server  # real Alertmanager and Prometheus processes

ALERTMANAGER_DIR = DEPLOY_DIR / "alertmanager"
CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"
ENTRYPOINT = ALERTMANAGER_DIR / "entrypoint.sh"
RULES = sorted((DEPLOY_DIR / "prometheus" / "rules").glob("*.yml"))
FAILED_RUN = 'airflow_dagrun_duration_seconds_count{dag_id="co2_retraining",state="failed"} 1\n'


def tool(name: str) -> str:
    executable = alertmanager_executable() if name == "alertmanager" else shutil.which(name)
    package = "prometheus" if name == "prometheus" else "prometheus-alertmanager"
    assert executable, f"{name} is missing: `make tools` installs it (Debian package {package})"
    return executable


def amtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("amtool"), "check-config", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def render(template: Path, config: Path, url: str | None) -> subprocess.CompletedProcess[str]:
    """entrypoint.sh as compose runs it, with `true` as the command it hands over to."""
    env = {"PATH": os.environ["PATH"], "ALERTMANAGER_TEMPLATE": str(template), "ALERTMANAGER_CONFIG": str(config)}
    if url is not None:
        env["ALERTMANAGER_WEBHOOK_URL"] = url
    return subprocess.run(
        ["/bin/sh", str(ENTRYPOINT), "true"], env=env, capture_output=True, text=True, timeout=60, check=False
    )


# --- the configuration and its entrypoint ------------------------------------------------------------
def test_amtool_accepts_the_configuration() -> None:
    result = amtool_check(CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 receivers" in result.stdout


def test_every_alert_goes_to_the_webhook_receiver() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["route"]["receiver"] == "co2-webhook"
    assert all("receiver" not in route for route in config["route"].get("routes", []))  # no alert diverted
    (webhook,) = next(r for r in config["receivers"] if r["name"] == "co2-webhook")["webhook_configs"]
    assert webhook["send_resolved"] is True


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.org/services/T000/B000/XXXX", "http://127.0.0.1:5001/alerts?team=co2&token=a1"],
)
def test_the_entrypoint_writes_the_webhook_url_into_a_private_copy(tmp_path: Path, url: str) -> None:
    config = tmp_path / "am" / "alertmanager.yml"
    result = render(CONFIG, config, url)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(config.read_text())
    assert rendered["route"]["receiver"] == "co2-webhook"
    (webhook,) = next(r for r in rendered["receivers"] if r["name"] == "co2-webhook")["webhook_configs"]
    assert webhook["url"] == url
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert amtool_check(config).returncode == 0


def test_without_a_url_alerts_are_kept_and_sent_nowhere(tmp_path: Path) -> None:
    config = tmp_path / "alertmanager.yml"
    result = render(CONFIG, config, "")
    assert result.returncode == 0, result.stderr
    assert "ALERTMANAGER_WEBHOOK_URL is empty" in result.stderr
    rendered = yaml.safe_load(config.read_text())
    assert rendered["route"]["receiver"] == "co2-none"
    assert next(r for r in rendered["receivers"] if r["name"] == "co2-none").keys() == {"name"}
    assert amtool_check(config).returncode == 0


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("hooks.example.org/alerts", "must start with http:// or https://"),
        ('http://example.org/a"b', "a space, a quote or a backslash"),
        ("http://example.org/a b", "a space, a quote or a backslash"),
    ],
)
def test_the_entrypoint_refuses_what_is_not_a_url(tmp_path: Path, url: str, said: str) -> None:
    result = render(CONFIG, tmp_path / "alertmanager.yml", url)
    assert result.returncode == 2 and said in result.stderr
    assert not (tmp_path / "alertmanager.yml").exists()  # Alertmanager does not start on a broken copy


def test_the_entrypoint_stops_when_the_placeholder_is_gone(tmp_path: Path) -> None:
    template = tmp_path / "template.yml"
    template.write_text(CONFIG.read_text().replace("co2-alert-webhook.invalid", "elsewhere.invalid"))
    result = render(template, tmp_path / "alertmanager.yml", "http://127.0.0.1:9/")
    assert result.returncode == 3 and "webhook placeholder" in result.stderr


# --- a real alert, end to end ------------------------------------------------------------------------
@dataclass
class Recorder:
    """A loopback HTTP server: serves `metrics` on GET, keeps every JSON body POSTed to it."""

    metrics: str = ""
    posted: list[dict[str, Any]] = field(default_factory=list)

    def serve(self) -> ThreadingHTTPServer:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = recorder.metrics.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                recorder.posted.append({"path": self.path, **json.loads(self.rfile.read(length))})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@pytest.fixture
def recorder() -> Iterator[tuple[Recorder, str]]:
    recorder = Recorder(metrics=FAILED_RUN)
    server = recorder.serve()
    yield recorder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def started(process: ManagedProcess, processes: list[ManagedProcess]) -> ManagedProcess:
    processes.append(process)
    process.wait_healthy(60)
    return process


@pytest.fixture
def processes() -> Iterator[list[ManagedProcess]]:
    running: list[ManagedProcess] = []
    yield running
    for process in reversed(running):
        process.stop()


def test_a_firing_rule_reaches_the_webhook_through_prometheus_and_alertmanager(
    tmp_path: Path, recorder: tuple[Recorder, str], processes: list[ManagedProcess]
) -> None:
    received, receiver_url = recorder
    # the stack's configuration, with the grouping delays in seconds
    config = yaml.safe_load(CONFIG.read_text())
    config["route"].update({"group_wait": "1s", "group_interval": "1s"})
    template = tmp_path / "alertmanager.template.yml"
    template.write_text(yaml.safe_dump(config, sort_keys=False))
    am_port, prometheus_port = free_port(), free_port()
    started(
        start(
            "alertmanager",
            [
                "/bin/sh",
                str(ENTRYPOINT),
                tool("alertmanager"),
                f"--config.file={tmp_path / 'am' / 'alertmanager.yml'}",
                f"--storage.path={tmp_path / 'am' / 'data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            f"http://127.0.0.1:{am_port}/-/ready",
            tmp_path / "alertmanager.log",
            {
                "ALERTMANAGER_TEMPLATE": str(template),
                "ALERTMANAGER_CONFIG": str(tmp_path / "am" / "alertmanager.yml"),
                "ALERTMANAGER_WEBHOOK_URL": f"{receiver_url}/co2-alerts",
            },
        ),
        processes,
    )
    prometheus_yml = tmp_path / "prometheus.yml"
    prometheus_yml.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(path) for path in RULES],  # the stack's rules, unchanged
                "scrape_configs": [
                    {"job_name": "airflow", "static_configs": [{"targets": [receiver_url.removeprefix("http://")]}]}
                ],
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            }
        )
    )
    started(
        start(
            "prometheus",
            [
                tool("prometheus"),
                f"--config.file={prometheus_yml}",
                f"--storage.tsdb.path={tmp_path / 'prometheus'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            f"http://127.0.0.1:{prometheus_port}/-/ready",
            tmp_path / "prometheus.log",
        ),
        processes,
    )

    def notified() -> list[dict[str, Any]]:
        return [
            alert
            for body in received.posted
            for alert in body["alerts"]
            if alert["labels"].get("alertname") == "CO2RetrainingFailed"
        ]

    seconds = wait_for(lambda: bool(notified()), 60, every=0.2)
    body = next(b for b in received.posted if b["alerts"])
    assert body["path"] == "/co2-alerts" and body["receiver"] == "co2-webhook" and body["status"] == "firing"
    alert = notified()[0]
    assert alert["status"] == "firing"
    assert alert["labels"] == {"alertname": "CO2RetrainingFailed", "dag_id": "co2_retraining", "severity": "warning"}
    assert alert["annotations"]["summary"] == "A run of the retraining DAG co2_retraining failed"
    assert f":{prometheus_port}/" in alert["generatorURL"]  # the link back to the rule's expression
    # nothing else fired on these series: the other rules stayed silent
    assert {a["labels"]["alertname"] for b in received.posted for a in b["alerts"]} == {"CO2RetrainingFailed"}
    print(f"alert at the webhook {seconds:.1f}s after Prometheus was ready")


# --- `co2 up` -----------------------------------------------------------------------------------------
def test_co2_up_starts_alertmanager_before_prometheus_and_points_prometheus_at_it(
    tmp_path: Path, recorder: tuple[Recorder, str], processes: list[ManagedProcess]
) -> None:
    _, receiver_url = recorder
    settings = Settings(home=tmp_path / "home", alertmanager_port=free_port(), alert_webhook_url=receiver_url)
    plan = StackPlan.from_settings(settings)
    stack = {c.name: c for c in components(plan, Secrets("jwt", "fernet", "password"))}
    names = list(stack)
    assert names.index("alertmanager") < names.index("prometheus")
    alertmanager = stack["alertmanager"]
    assert f"--web.listen-address=127.0.0.1:{plan.alertmanager_port}" in alertmanager.command
    assert "--cluster.listen-address=" in alertmanager.command  # no gossip port on every interface
    alerting = yaml.safe_load(prometheus_config(plan, alertmanager=True).read_text())["alerting"]
    assert alerting == {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{plan.alertmanager_port}"]}]}]}

    # the component's own command and environment, as `co2 up` launches it
    ready = f"{alertmanager.url}/-/ready"
    started(start("alertmanager", alertmanager.command, ready, tmp_path / "am.log", alertmanager.env), processes)
    assert alertmanager.healthy()  # the check `co2 up` waits on
    copy = plan.home / "alertmanager" / "alertmanager.yml"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    status = httpx.get(f"{alertmanager.url}/api/v2/status", timeout=10).json()
    assert yaml.safe_load(status["config"]["original"])["route"]["receiver"] == "co2-webhook"
