"""Failure mails without Airflow: what they say, and handed to a real SMTP server on loopback."""

from __future__ import annotations

import pytest

from co2.discodata import DiscodataError
from co2.local import free_port
from co2.notify import NotificationError, TaskFailure, describe_error, rebased, send_failure_mail
from co2.settings import Settings
from tests.conftest import SmtpSink

LOG_URL = "http://127.0.0.1:8080/dags/co2_retraining/runs/manual__2026-11-27T23%3A08%3A10%2B00%3A00/tasks/download?try_number=4"


def failure(error: str = "DiscodataError: discodata answered 500 Internal Server Error 3 times") -> TaskFailure:
    return TaskFailure(
        dag_id="co2_retraining",
        run_id="manual__2026-11-27T23:08:10+00:00",
        task_id="download",
        try_number=4,
        error=error,
        log_url=LOG_URL,
    )


def test_the_mail_names_dag_run_task_error_and_log() -> None:
    mail = failure()
    assert mail.subject == "[co2] co2_retraining: task download failed (run manual__2026-11-27T23:08:10+00:00)"
    body = mail.body()
    assert "The task download of the DAG co2_retraining failed in run manual__2026-11-27T23:08:10+00:00" in body
    assert "on try 4, with no retry left" in body
    assert "    DiscodataError: discodata answered 500 Internal Server Error 3 times" in body
    assert f"Task log: {LOG_URL}\n" in body


def test_the_error_keeps_no_credentials_and_stays_short() -> None:
    leaked = DiscodataError("no answer from https://user:s3cret@discodata.example/sql?token=abcdef0123456789xyz&p=1")
    described = describe_error(leaked)
    assert described == "DiscodataError: no answer from https://discodata.example/sql?p=1"
    assert describe_error(ValueError()) == "ValueError"
    assert "no exception was recorded" in describe_error(None)
    long = describe_error("x" * 10_000)
    assert len(long) == 2_000 and long.endswith("…")


def test_the_log_link_can_use_the_address_readers_reach_airflow_by() -> None:
    public = rebased(LOG_URL, "http://127.0.0.1:8080/", "https://airflow.example.org/")
    assert public == LOG_URL.replace("http://127.0.0.1:8080", "https://airflow.example.org")
    assert rebased(LOG_URL, "http://127.0.0.1:8080", "") == LOG_URL  # not configured: Airflow's own
    assert rebased(LOG_URL, "http://other:8080", "https://airflow.example.org") == LOG_URL


def test_a_real_smtp_server_receives_the_mail(smtp_server: SmtpSink) -> None:
    settings = Settings(
        notify_email_to=["ops@example.org", "data@example.org"],
        notify_email_from="co2-airflow@example.org",
        notify_smtp_host="127.0.0.1",
        notify_smtp_port=smtp_server.port,
    )
    assert send_failure_mail(failure(), settings) == ["ops@example.org", "data@example.org"]
    ((recipients, message),) = smtp_server.messages
    assert recipients == ["ops@example.org", "data@example.org"]
    assert message["From"] == "co2-airflow@example.org"
    assert message["To"] == "ops@example.org, data@example.org"
    assert message["Subject"] == failure().subject
    assert message.get_content().replace("\r\n", "\n") == failure().body()  # SMTP carries CRLF lines


def test_nobody_configured_nothing_sent(smtp_server: SmtpSink) -> None:
    settings = Settings(notify_smtp_host="127.0.0.1", notify_smtp_port=smtp_server.port)
    assert settings.notify_email_to == []
    assert send_failure_mail(failure(), settings) == []
    assert smtp_server.messages == []


def test_an_unreachable_smtp_server_is_an_error_naming_the_settings() -> None:
    settings = Settings(notify_email_to=["ops@example.org"], notify_smtp_host="127.0.0.1", notify_smtp_port=free_port())
    with pytest.raises(NotificationError, match=r"127\.0\.0\.1:\d+ \(ConnectionRefusedError.*CO2_NOTIFY_SMTP_HOST"):
        send_failure_mail(failure(), settings)
