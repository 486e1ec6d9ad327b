"""The local StatsD bridge (`co2 statsd-exporter`) as `co2 up` runs it: real UDP packets in, its real /metrics out."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from co2.local import ManagedProcess, free_port, start
from co2.statsd_bridge import MappingError, StatsdMapping

pytestmark = pytest.mark.server  # the StatsD bridge as a process

CO2 = str(Path(sys.executable).parent / "co2")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Bridge:
    udp_port: int
    metrics_url: str
    log_file: Path
    process: ManagedProcess

    def send(self, *packets: str | bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for packet in packets:
                sock.sendto(packet.encode() if isinstance(packet, str) else packet, ("127.0.0.1", self.udp_port))

    def samples(self) -> Samples:
        """Every sample of /metrics, read by prometheus_client's own parser of the text format."""
        text = httpx.get(self.metrics_url, timeout=10).text
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def wait_for(self, done: Callable[[Samples], bool], seconds: float = 10) -> Samples:
        deadline = time.monotonic() + seconds
        while True:
            samples = self.samples()
            if done(samples) or time.monotonic() > deadline:
                return samples
            time.sleep(0.1)


def lines_counted(samples: Samples, outcome: str) -> float:
    return samples.get(("co2_statsd_bridge_lines_total", frozenset({("outcome", outcome)})), 0.0)


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Bridge]:
    udp_port, metrics_port = free_port(), free_port()
    log_file = tmp_path / "statsd.log"
    command = [CO2, "statsd-exporter", "--port", str(udp_port), "--metrics-port", str(metrics_port)]
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    process = start("statsd-exporter", [*command, "--out", str(log_file)], url, tmp_path / "bridge.log")
    process.wait_healthy(60)
    yield Bridge(udp_port, url, log_file, process)
    process.stop()


def series(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_airflow_lines_become_the_mapped_series(bridge: Bridge) -> None:
    run = {"dag_id": "co2_retraining", "run_type": "manual"}
    bridge.send(
        # one packet of several lines, as Airflow's client batches them
        "airflow.dagrun.duration.failed,dag_id=co2_retraining,run_type=manual:12345|ms\n"
        "airflow.ti.finish,dag_id=co2_retraining,task_id=download,state=failed:1|c\n"
        "airflow.ti.finish.co2_retraining.download.failed:1|c",
        "airflow.ti.finish,dag_id=co2_retraining,task_id=download,state=failed:1|c|@0.5",
        "airflow.co2.train.knn_with_make.rmse_g_km:4.25|g",
        "airflow.co2.register.production_version:3|g",
        "airflow.co2.register.production_version:+1|g",
        "airflow.dag_processing.total_parse_time:1.5|g",
    )
    samples = bridge.wait_for(lambda s: lines_counted(s, "exported") + lines_counted(s, "dropped") >= 8)

    duration = {**run, "state": "failed"}
    assert samples[series("airflow_dagrun_duration_seconds_count", **duration)] == 1
    assert samples[series("airflow_dagrun_duration_seconds_sum", **duration)] == pytest.approx(12.345)  # seconds
    assert samples[series("airflow_dagrun_duration_seconds_bucket", **duration, le="5")] == 0
    assert samples[series("airflow_dagrun_duration_seconds_bucket", **duration, le="15")] == 1
    finished = series("airflow_task_finished_total", dag_id="co2_retraining", task_id="download", state="failed")
    assert samples[finished] == 3  # 1, then 1 sampled at a rate of 0.5
    assert samples[series("co2_candidate_rmse_g_km", candidate="knn_with_make")] == 4.25
    assert samples[series("co2_production_model_version")] == 4  # a gauge's +1 adds
    assert samples[series("airflow_dag_processing_total_parse_time")] == 1.5  # no mapping: dots to underscores
    # the form with ids in the name is dropped, not exported under another name
    assert not [name for name, _ in samples if "co2_retraining" in name]
    assert lines_counted(samples, "dropped") == 1 and lines_counted(samples, "malformed") == 0
    assert "airflow.co2.train.knn_with_make.rmse_g_km:4.25|g" in bridge.log_file.read_text().splitlines()


def test_malformed_lines_are_counted_and_skipped(bridge: Bridge) -> None:
    malformed = [
        "no colon at all",
        "airflow.co2.download.rows:many|g",
        "airflow.co2.download.rows:5|x",
        "airflow.co2.download.rows:5|g|#dogstatsd:tag",
        "airflow.ti.finish,dag_id:1|c",
        "airflow.co2.download.rows:nan|g",
        "airflow.ti.finish,dag_id=d,task_id=t,state=s,__name__=x:1|c",
        ":1|c",
    ]
    good = "airflow.co2.download.rows:120|g"
    bridge.send("\n".join([*malformed, good]), b"\xff\xfe\x00:1|c", "")
    samples = bridge.wait_for(lambda s: lines_counted(s, "malformed") >= 9)
    assert lines_counted(samples, "malformed") == 9
    assert samples[series("co2_download_rows")] == 120  # the good line of the same packet went through

    # the same metric with another kind, or another set of labels: refused, the first one stays
    bridge.send(
        "airflow.co2.download.rows:5|c",
        "airflow.ti.finish,dag_id=d,task_id=t,state=success:1|c",
        "airflow.ti.finish,dag_id=d,task_id=t:1|c",
    )
    samples = bridge.wait_for(lambda s: lines_counted(s, "conflicting") >= 2)
    assert lines_counted(samples, "conflicting") == 2
    assert samples[series("co2_download_rows")] == 120
    assert samples[series("airflow_task_finished_total", dag_id="d", task_id="t", state="success")] == 1
    assert bridge.process.process.poll() is None  # still running


@pytest.mark.parametrize(
    "config",
    [
        {"mappings": [{"match": "airflow.ti_*", "name": "x"}]},  # partial globs: not implemented
        {"mappings": [{"match": "airflow.x", "name": "x", "match_type": "regex"}]},
        {"defaults": {"ttl": "5m"}, "mappings": []},
        {"mappings": [{"match": "airflow.x", "name": "x", "observer_type": "native"}]},
        {"mappings": [{"match": "airflow.x", "name": "x", "histogram_options": {"native_histogram_factor": 1.1}}]},
    ],
)
def test_a_mapping_the_bridge_would_translate_wrongly_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(MappingError):
        StatsdMapping(config)
