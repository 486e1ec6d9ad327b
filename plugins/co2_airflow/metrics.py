"""The pipeline's own figures, sent through Airflow's StatsD client (no-ops unless `[metrics] statsd_on`)."""

from __future__ import annotations

import re

from airflow.sdk.observability.stats import Stats

PREFIX = "co2"


def _name(*parts: str) -> str:
    return ".".join(re.sub(r"[^A-Za-z0-9_]+", "_", p) for p in (PREFIX, *parts))


def gauge(*parts: str, value: float) -> None:
    Stats.gauge(_name(*parts), value)
