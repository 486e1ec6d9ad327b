"""deploy/statsd/mapping.yml against the StatsD lines a real Airflow 3 sends for a failed and a successful run."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from airflow.utils.state import TaskInstanceState

from co2_model.families import FAMILIES
from tests.deploy.conftest import DEPLOY_DIR
from tests.deploy.statsd_exporter import StatsdExporter

MAPPING = DEPLOY_DIR / "statsd" / "mapping.yml"

TASKS = {
    "discover",
    "anything_new",
    "download",
    "validate",
    "preprocess",
    *(f"train_{family}" for family in FAMILIES),
    "compare",
    "register",
    "report",
}
CANDIDATES = {f"{family}{suffix}" for family in FAMILIES for suffix in ("", "_with_make")}


def series(exporter: StatsdExporter, name: str) -> list[dict[str, str]]:
    return exporter.label_sets().get(name, [])


def test_the_run_sent_the_names_the_mapping_expects(airflow_statsd_lines: list[str]) -> None:
    """Airflow 3.3's tagged names, with the tags as InfluxDB-style labels, as the stack configures it."""
    names = {line.rpartition(":")[0] for line in airflow_statsd_lines}
    for expected in (
        "airflow.dagrun.duration.success,dag_id=co2_retraining,run_type=manual",
        "airflow.dagrun.duration.failed,dag_id=co2_retraining,run_type=manual",
        "airflow.task.duration,dag_id=co2_retraining,task_id=train_knn",
        "airflow.ti.finish,dag_id=co2_retraining,task_id=download,state=failed",
        "airflow.ti.finish,dag_id=co2_retraining,task_id=register,state=success",
        "airflow.co2.download.rows",
        "airflow.co2.train.random_forest_with_make.rmse_g_km",
        "airflow.co2.register.production_rmse_g_km",
        "airflow.co2.retraining.current_at_unixtime",
        "airflow.co2.discover.nothing_new",
        "airflow.scheduler_heartbeat",
    ):
        assert expected in names, sorted(n for n in names if n.startswith(expected.split(",")[0].rsplit(".", 1)[0]))


def test_dag_runs_are_labelled_by_dag_and_outcome(exporter: StatsdExporter) -> None:
    runs = {(s["dag_id"], s["state"]) for s in series(exporter, "airflow_dagrun_duration_seconds_count")}
    assert runs == {("co2_retraining", "success"), ("co2_retraining", "failed"), ("co2_eea_releases", "success")}
    success = next(
        found
        for (name, labels), found in exporter.series.items()
        if name == "airflow_dagrun_duration_seconds"
        and ("state", "success") in labels
        and ("dag_id", "co2_retraining") in labels
    )
    assert success.kind == "histogram" and success.count == 1
    assert 10 < success.total < 3600  # seconds, not milliseconds


def test_tasks_are_labelled_by_dag_task_and_state(exporter: StatsdExporter) -> None:
    durations = {(s["dag_id"], s["task_id"]) for s in series(exporter, "airflow_task_duration_seconds_count")}
    assert durations == {("co2_retraining", task) for task in TASKS} | {("co2_eea_releases", "check_releases")}
    finished = {(s["task_id"], s["state"]) for s in series(exporter, "airflow_task_finished_total")}
    assert {(task, "success") for task in TASKS} | {("download", "failed")} <= finished
    # a task retried on a busy machine adds its up_for_retry: any state, but only Airflow's names
    assert {state for _, state in finished} <= {state.value for state in TaskInstanceState}, finished
    assert {s["dag_id"] for s in series(exporter, "airflow_task_finished_total")} == {
        "co2_retraining",
        "co2_eea_releases",
    }


def test_the_pipeline_figures_are_mapped(exporter: StatsdExporter) -> None:
    for name in (
        "co2_download_rows",
        "co2_download_registrations",
        "co2_validation_failed_checks",
        "co2_register_promoted",
        "co2_production_model_version",
        "co2_production_rmse_g_km",
        "co2_production_mae_g_km",
        "co2_retraining_last_success_timestamp_seconds",
        "co2_discovery_fallback",
        "co2_discovery_nothing_new",
        "co2_training_newest_year",
    ):
        assert series(exporter, name) == [{}], name
    assert {s["candidate"] for s in series(exporter, "co2_candidate_rmse_g_km")} == CANDIDATES
    assert {s["candidate"] for s in series(exporter, "co2_candidate_mae_g_km")} == CANDIDATES
    assert {s["split"] for s in series(exporter, "co2_preprocess_rows")} == {"train", "test"}


def test_ids_never_end_up_in_metric_names(exporter: StatsdExporter) -> None:
    """The older forms with the ids in the name are dropped: nothing is counted twice, no name per DAG or task."""
    names = set(exporter.label_sets())
    airflow_names = {n for n in names if n.startswith("airflow_")}
    assert not {n for n in airflow_names if "co2_retraining" in n or "LocalExecutor" in n or "default_pool" in n}
    assert "airflow.ti.finish.co2_retraining.download.failed" in exporter.dropped


def test_every_mapping_is_used_by_a_real_run(exporter: StatsdExporter) -> None:
    """No mapping for a name Airflow does not send: each naming rule matched at least one captured line."""
    used = set(exporter.matched.values())
    unused = [m.match for m in exporter.mappings if not m.drop and m.match not in used]
    assert not unused


def test_every_drop_is_an_older_name_of_airflow() -> None:
    """The drops are exactly Airflow's own `legacy_name`s (its metrics template) that carry ids, as globs."""
    import airflow

    template = Path(airflow.__file__).parent / "_shared" / "observability" / "metrics" / "metrics_template.yaml"
    legacy = {
        "airflow." + re.sub(r"\{[a-z_]+\}", "*", metric["legacy_name"])
        for metric in yaml.safe_load(template.read_text())["metrics"]
        if metric.get("legacy_name", "-") != "-"
    }
    drops = {m.match for m in StatsdExporter(MAPPING).mappings if m.drop}
    assert drops <= legacy, drops - legacy


def test_mapped_metrics_follow_prometheus_conventions(exporter: StatsdExporter, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`promtool check metrics` on the exposition of every mapped metric (units, _total on counters)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make tools` installs it (Debian package prometheus)"
    mapped = {m.name for m in exporter.mappings if not m.drop and "$" not in m.name}
    text = exporter.exposition(mapped)
    assert text.count("# TYPE") == len(mapped)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
