"""A failed task mails someone: the Airflow side of `co2.notify`, attached to both DAGs' tasks.

`FailureMail()` is built when the DAG file is parsed and does nothing then: it holds no setting and
opens no connection. When a task fails for good (no retry left), Airflow calls it in the task's
process; only then it reads the settings (`CO2_NOTIFY_*`) and sends the mail. With no recipient
configured it says so in the task log and sends nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.notifier import BaseNotifier

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context


class FailureMail(BaseNotifier):
    """Mails CO2_NOTIFY_EMAIL_TO which DAG, run and task failed, the error and the link to the task log."""

    def notify(self, context: Context) -> None:
        from co2.notify import TaskFailure, describe_error, rebased, send_failure_mail
        from co2.settings import get_settings

        settings = get_settings()
        ti: Any = context["ti"]
        if not settings.notify_email_to:
            self.log.warning(
                "the failure of %s is not mailed: no recipient (set CO2_NOTIFY_EMAIL_TO, see .env.example)",
                ti.task_id,
            )
            return
        failure = TaskFailure(
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            try_number=int(ti.try_number or 1),
            error=describe_error(context.get("exception")),
            log_url=rebased(ti.log_url, airflow_base_url(), settings.notify_airflow_url),
        )
        sent_to = send_failure_mail(failure, settings)
        self.log.info("the failure of %s was mailed to %s", ti.task_id, ", ".join(sent_to) or "nobody")


def airflow_base_url() -> str:
    """Airflow's `[api] base_url`, which the task log's address (`ti.log_url`) starts with."""
    from airflow.sdk.configuration import conf

    return str(conf.get("api", "base_url", fallback="http://localhost:8080/"))
