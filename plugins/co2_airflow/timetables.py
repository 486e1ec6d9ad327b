"""The DAGs' cron timetables, with one rule for a DAG's first unpause: wait for the next fire time."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronTriggerTimetable


def next_fire_time_only(cron: str) -> CronTriggerTimetable:
    """A UTC cron timetable whose first run is the next fire time after the DAG is unpaused.

    `run_immediately=False`, Airflow's default, does not do that: the scheduler then starts a run
    for the last fire time if it lies within a tenth of the gap between fire times (2.4 hours for
    a daily cron, 9 days for a quarterly one), so a platform started at 06:30 would run the 06:00
    check at once. A zero timedelta is "never".
    """
    return CronTriggerTimetable(cron, timezone="UTC", run_immediately=timedelta(0))
