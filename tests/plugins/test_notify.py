"""The Airflow notifier called as Airflow calls it on a failed task: the mail reaches a real SMTP server.

The context holds what Airflow's task runner gives an `on_failure_callback`: the task instance (its ids,
try number and log URL under Airflow's `[api] base_url`) and the exception. A run that really fails
sends it too (tests/dags/test_dag_e2e.py).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest

from co2.discodata import DiscodataError
from co2.settings import get_settings
from tests.conftest import SmtpSink

RUN_ID = "scheduled__2026-12-01T00:00:00+00:00"


def context(task_id: str = "download") -> dict[str, Any]:
    from co2_airflow.notify import airflow_base_url

    log_url = f"{airflow_base_url().rstrip('/')}/dags/co2_retraining/runs/{quote(RUN_ID)}/tasks/{task_id}?try_number=4"
    ti = SimpleNamespace(
        dag_id="co2_retraining", run_id=RUN_ID, task_id=task_id, try_number=4, map_index=-1, log_url=log_url
    )
    error = DiscodataError("discodata at https://reader:pw@discodata.example/sql answered 503 4 times")
    return {"ti": ti, "task_instance": ti, "run_id": RUN_ID, "exception": error}


def test_a_failed_task_is_mailed(smtp_server: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> None:
    from co2_airflow.notify import FailureMail

    for name, value in {**smtp_server.env("ops@example.org"), "CO2_NOTIFY_AIRFLOW_URL": "https://af.example"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    FailureMail()(context())

    ((recipients, message),) = smtp_server.messages
    assert recipients == ["ops@example.org"]
    assert message["Subject"] == f"[co2] co2_retraining: task download failed (run {RUN_ID})"
    body = message.get_content()
    assert f"The task download of the DAG co2_retraining failed in run {RUN_ID}" in body
    assert "DiscodataError: discodata at https://discodata.example/sql answered 503 4 times" in body
    assert "pw" not in body.replace("https://", "")  # the source's credentials stay out of the mail
    assert f"Task log: https://af.example/dags/co2_retraining/runs/{quote(RUN_ID)}/tasks/download?try_number=4" in body


def test_no_recipient_no_mail_and_the_task_log_says_so(
    smtp_server: SmtpSink, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from co2_airflow.notify import FailureMail

    monkeypatch.setenv("CO2_NOTIFY_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CO2_NOTIFY_SMTP_PORT", str(smtp_server.port))
    monkeypatch.delenv("CO2_NOTIFY_EMAIL_TO", raising=False)
    get_settings.cache_clear()
    capsys.readouterr()
    FailureMail()(context("validate"))
    assert smtp_server.messages == []
    logged = capsys.readouterr().out  # the notifier's logger: Airflow's structlog, the task log in a run
    (line,) = [line for line in logged.splitlines() if "the failure of validate is not mailed" in line]
    assert "warning" in line.lower() and "no recipient (set CO2_NOTIFY_EMAIL_TO, see .env.example)" in line


def test_a_mail_that_cannot_be_sent_fails_the_callback_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's task runner logs a callback's exception in the task log: the reason must be in it."""
    from co2.local import free_port
    from co2.notify import NotificationError
    from co2_airflow.notify import FailureMail

    monkeypatch.setenv("CO2_NOTIFY_EMAIL_TO", '["ops@example.org"]')
    monkeypatch.setenv("CO2_NOTIFY_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CO2_NOTIFY_SMTP_PORT", str(free_port()))
    get_settings.cache_clear()
    with pytest.raises(NotificationError, match="CO2_NOTIFY_SMTP_HOST"):
        FailureMail()(context())
