"""
### EEA releases: a daily look at discodata's listing

Reads discodata's metadata listing (`/md/`) once a day. When it lists a new EEA car table (a new
year, a new version, a final table replacing a provisional one), this run emits an event on the
Asset `eea_co2_cars_releases`, and `co2_retraining`, scheduled on that Asset, runs on the new
window within the day. When nothing changed, the task is skipped and no event is emitted. The
event's extra holds the newest table of each year: the next check compares the listing with it.
A failure (the listing unreadable after the retries) mails `CO2_NOTIFY_EMAIL_TO`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from co2_airflow.assets import EEA_RELEASES
from co2_airflow.notify import FailureMail
from co2_airflow.timetables import next_fire_time_only


@dag(
    dag_id="co2_eea_releases",
    schedule=next_fire_time_only("0 6 * * *"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["co2", "eea", "releases"],
    default_args={
        "owner": "co2",
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
        "on_failure_callback": FailureMail(),  # mails CO2_NOTIFY_EMAIL_TO
    },
)
def co2_eea_releases() -> None:
    @task(inlets=[EEA_RELEASES], outlets=[EEA_RELEASES])
    def check_releases(inlet_events: Any = None, outlet_events: Any = None) -> dict[str, Any]:
        """Emit an event on the Asset if the listing names a table not seen at the last event."""
        import logging

        from airflow.sdk.exceptions import AirflowSkipException

        from co2.discodata import DiscodataClient
        from co2.releases import check_releases as run_check
        from co2.settings import get_settings
        from co2_airflow import metrics
        from co2_airflow.hooks import DiscodataHook

        settings = get_settings()
        events = inlet_events[EEA_RELEASES] if inlet_events is not None else []
        last_seen = (events[-1].extra or {}).get("newest") if len(events) else None
        with DiscodataClient.from_settings(settings, DiscodataHook().resolve("", settings)) as client:
            check = run_check(client, last_seen)
        metrics.gauge("releases", "newest_year", value=max(check.newest))
        metrics.gauge("releases", "new_tables", value=len(check.new))
        if not check.changed:
            raise AirflowSkipException(check.summary())  # skipped: no asset event
        outlet_events[EEA_RELEASES].extra = check.to_extra()
        logging.getLogger("airflow.task").info(check.summary())
        return check.to_extra()

    check_releases()


co2_eea_releases()
