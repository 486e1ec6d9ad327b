"""The DAG imports cleanly, has exactly the intended shape and policy, and does nothing at parse time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import pytest

from co2_model.families import FAMILIES
from tests.conftest import PROJECT_DIR

TRAIN_TASKS = {f"train_{family}" for family in FAMILIES}


@pytest.fixture(scope="module")
def dagbag(airflow_db):  # type: ignore[no-untyped-def]
    """The DAGs as parsed, untouched (conftest's shortens retry delays for the runs)."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT_DIR / "dags"))


@pytest.fixture(scope="module")
def dag(dagbag):  # type: ignore[no-untyped-def]
    return dagbag.get_dag("co2_retraining")


def test_imports_without_errors(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"co2_retraining", "co2_eea_releases"}


def test_exactly_these_tasks_and_dependencies(dag) -> None:  # type: ignore[no-untyped-def]
    assert set(dag.task_ids) == {
        *("discover", "anything_new", "download", "validate", "preprocess"),
        *TRAIN_TASKS,
        *("compare", "register", "report"),
    }
    downstream = {task.task_id: set(task.downstream_task_ids) for task in dag.tasks}
    assert downstream["discover"] == {"anything_new", "download"}
    assert downstream["anything_new"] == {"download"}  # a short circuit: nothing new skips everything after
    assert dag.get_task("anything_new").ignore_downstream_trigger_rules
    assert downstream["download"] == {"validate"}
    assert downstream["validate"] == {"preprocess", "report"}  # the report shows the validation checks
    assert downstream["preprocess"] == {*TRAIN_TASKS, "compare", "register", "report"}
    for train in TRAIN_TASKS:
        assert downstream[train] == {"compare"}
    assert downstream["compare"] == {"register", "report"}  # a report never holds production back
    assert downstream["register"] == downstream["report"] == set()
    assert set(dag.get_task("compare").upstream_task_ids) == {"preprocess", *TRAIN_TASKS}


def test_schedule_and_policy(dag, dagbag) -> None:  # type: ignore[no-untyped-def]
    """Retraining runs on the watcher's asset events or quarterly, whichever comes first."""
    from airflow.sdk import AssetOrTimeSchedule

    from co2_airflow.assets import EEA_RELEASES

    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert dag.timetable.timetable.expression == "0 0 1 */3 *"
    assert list(dag.timetable.asset_condition.objects) == [EEA_RELEASES]
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert {"co2", "retraining"} <= set(dag.tags)
    assert dag.doc_md and "force_promotion" in dag.doc_md and "force_retrain" in dag.doc_md
    assert set(dag.params.keys()) == {"years", "tables", "source", "force_retrain", "force_promotion"}
    assert dag.params["force_promotion"] is False and dag.params["force_retrain"] is False

    watcher = dagbag.get_dag("co2_eea_releases")
    assert watcher.timetable.expression == "0 6 * * *"  # daily: a release reaches the model within a day
    (check,) = watcher.tasks
    assert check.outlets == [EEA_RELEASES] and check.inlets == [EEA_RELEASES]


def test_the_trigger_form_opens_ready_to_submit(dag) -> None:  # type: ignore[no-untyped-def]
    """Each param as the UI receives it (the serialised DAG's value and JSON schema) is valid as it opens.

    Airflow's trigger form takes a param as required when its schema's type does not allow "null", and
    refuses a required param that is empty (null or ""): one such default disables the Trigger button.
    """
    import jsonschema
    from airflow.serialization.serialized_objects import DagSerialization

    served = DagSerialization.from_dict(DagSerialization.to_dict(dag)).params
    for name, param in served.items():
        schema = param.dump()["schema"]
        jsonschema.validate(param.value, schema, format_checker=jsonschema.FormatChecker())
        types = schema.get("type")
        required = bool(types) and not (isinstance(types, list) and "null" in types)
        assert not (required and param.value in (None, "")), f"{name} is required but opens empty"
    assert served.validate() == {  # a trigger with {}
        "years": [],
        "tables": None,
        "source": None,
        "force_retrain": False,
        "force_promotion": False,
    }

    source = served.get_param("source").schema
    for accepted in (None, "", "live", "https://discodata.eea.europa.eu", "http://127.0.0.1:8765"):
        jsonschema.validate(accepted, source)
    for refused in ("LIVE", "discodata.eea.europa.eu", "ftp://example.org", "https://"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(refused, source)


def test_retries_where_a_retry_can_help(dag) -> None:  # type: ignore[no-untyped-def]
    download = dag.get_task("download")
    assert download.retries >= 2
    assert download.retry_exponential_backoff
    assert download.retry_delay >= timedelta(minutes=1)
    assert dag.get_task("validate").retries == 0  # the data will not change on a retry
    assert dag.get_task("discover").retries >= 2
    for task_id in (*TRAIN_TASKS, "preprocess", "compare", "register", "report"):
        assert dag.get_task(task_id).retries >= 2


def test_a_task_that_fails_for_good_mails_someone(dagbag) -> None:  # type: ignore[no-untyped-def]
    """Every task of both DAGs carries the failure notifier (plugins/co2_airflow/notify.py); it reads
    the settings only when it fires (tests/plugins/test_notify.py, and a failing run in test_dag_e2e.py)."""
    from co2_airflow.notify import FailureMail

    for dag in dagbag.dags.values():
        for task in dag.tasks:
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(isinstance(callback, FailureMail) for callback in callbacks), (dag.dag_id, task.task_id)


def test_every_task_has_a_docstring(dag) -> None:  # type: ignore[no-untyped-def]
    for task in dag.tasks:
        assert task.doc_md or task.python_callable.__doc__, task.task_id


@pytest.mark.parametrize("dag_file", ["co2_retraining.py", "co2_eea_releases.py"])
def test_nothing_heavy_or_networked_at_parse_time(dag_file: str) -> None:
    """Parse the file with the network cut and check no heavy module was imported."""
    probe = textwrap.dedent(
        f"""
        import socket, sys, importlib.util
        def refuse(*args, **kwargs):
            raise AssertionError("network access at DAG parse time")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        before = set(sys.modules)
        sys.path[:0] = [{str(PROJECT_DIR / "include")!r}, {str(PROJECT_DIR / "plugins")!r}]
        spec = importlib.util.spec_from_file_location("dag_file", {str(PROJECT_DIR / "dags" / dag_file)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        heavy = {{"pandas", "sklearn", "mlflow", "co2.pipeline.train", "co2_model.model", "co2.releases"}}
        loaded = sorted(name for name in heavy if name in sys.modules and name not in before)
        assert not loaded, f"imported at parse time: {{loaded}}"
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_no_airflow_2_leftovers() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--select",
            "AIR3",
            str(PROJECT_DIR / "dags"),
            str(PROJECT_DIR / "plugins"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("dag_id", "now", "first_run"),
    [
        # half an hour after a fire time, well within Airflow's default "run the last one at once" window
        ("co2_retraining", datetime(2027, 1, 1, 0, 30, tzinfo=UTC), datetime(2027, 4, 1, tzinfo=UTC)),
        ("co2_eea_releases", datetime(2026, 11, 29, 6, 30, tzinfo=UTC), datetime(2026, 11, 30, 6, tzinfo=UTC)),
    ],
)
def test_unpausing_waits_for_the_next_fire_time(
    dagbag, monkeypatch: pytest.MonkeyPatch, dag_id: str, now: datetime, first_run: datetime
) -> None:  # type: ignore[no-untyped-def]
    """A fresh platform starts no run for a fire time already past, however recent: the first is the next."""
    import airflow.timetables.trigger
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    monkeypatch.setattr(airflow.timetables.trigger, "utcnow", lambda: now)  # the scheduler's clock
    scheduled = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.get_dag(dag_id)))  # as the scheduler sees it
    first = scheduled.timetable.next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest=None, latest=None, catchup=False)
    )
    assert first is not None
    assert first.run_after == first_run
