"""Failure mails: what a person reads when a task of a DAG run fails, and sending it over SMTP.

Plain Python, no Airflow: `plugins/co2_airflow/notify.py` turns what Airflow knows of a failure (DAG,
run, task, try, exception, the task log's address) into a `TaskFailure` and calls `send_failure_mail`
with the settings (`CO2_NOTIFY_*`, see .env.example). The mail names the DAG, the run and the task,
gives the error (URLs without credentials, at most 2,000 characters) and the link to the task's log in
the Airflow UI.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from co2.redact import redact_url
from co2.settings import Settings

MAX_ERROR_CHARS = 2_000
URL = re.compile(r"https?://[^\s'\"<>]+")


class NotificationError(RuntimeError):
    """The mail could not be handed to the SMTP server; the message names the settings to check."""


@dataclass(frozen=True)
class TaskFailure:
    """One failed task instance, as the mail tells it."""

    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    error: str  # describe_error's sentence
    log_url: str

    @property
    def subject(self) -> str:
        return f"[co2] {self.dag_id}: task {self.task_id} failed (run {self.run_id})"

    def body(self) -> str:
        error = "\n".join(f"    {line}" for line in self.error.splitlines() or [""])
        return (
            f"The task {self.task_id} of the DAG {self.dag_id} failed in run {self.run_id} "
            f"on try {self.try_number}, with no retry left.\n\n"
            f"Error:\n{error}\n\n"
            f"Task log: {self.log_url}\n\n"
            "The tasks downstream of it do not run in this run. Once the cause is fixed, clear the task in "
            "Airflow (it runs again with what is downstream of it), or trigger a new run.\n"
        )


def describe_error(error: BaseException | str | None) -> str:
    """The error as the mail shows it: its type and message, URLs without credentials, shortened."""
    if error is None or error == "":
        text = "no exception was recorded (the task process may have been stopped or lost); see the task log"
    elif isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    else:
        text = str(error)
    text = URL.sub(lambda match: redact_url(match.group(0)), text)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def rebased(url: str, base_url: str, public_base_url: str) -> str:
    """`url` (under Airflow's own `base_url`) under the address its readers reach Airflow by."""
    base, public = base_url.rstrip("/"), public_base_url.rstrip("/")
    if not public or not url.startswith(base):
        return url
    return public + url[len(base) :]


def failure_message(failure: TaskFailure, sender: str, recipients: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = failure.subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(failure.body())
    return message


def send_failure_mail(failure: TaskFailure, settings: Settings) -> list[str]:
    """Mail the failure to `notify_email_to`; the recipients it was handed over for, or NotificationError."""
    recipients = list(settings.notify_email_to)
    if not recipients:
        return []
    message = failure_message(failure, settings.notify_email_from, recipients)
    host, port = settings.notify_smtp_host, settings.notify_smtp_port
    try:
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            if settings.notify_smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.notify_smtp_user:
                smtp.login(settings.notify_smtp_user, settings.notify_smtp_password.get_secret_value())
            refused = smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise NotificationError(
            f"the failure mail of {failure.dag_id}.{failure.task_id} could not be sent through {host}:{port} "
            f"({type(exc).__name__}: {exc}); check CO2_NOTIFY_SMTP_HOST, CO2_NOTIFY_SMTP_PORT and the login"
        ) from None
    return [recipient for recipient in recipients if recipient not in refused]
