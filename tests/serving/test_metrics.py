"""The service's own metric helpers, without a server."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from serving.metrics import observe_many

BUCKETS = (0, 25, 50, 100, 200)


def _exposition(observe: str, values: np.ndarray) -> list[str]:
    """What a scrape reads, but the time the histogram was made."""
    registry = CollectorRegistry()
    histogram = Histogram("co2_test_g_km", "test", buckets=BUCKETS, registry=registry)
    if observe == "one by one":
        for value in values.tolist():
            histogram.observe(value)
    else:
        observe_many(histogram, values)
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_observing_many_values_at_once_is_observing_each() -> None:
    # on the bounds, between them, below the first and beyond the last (the +Inf bucket)
    values = np.array([-3.0, 0.0, 0.5, 25.0, 25.000001, 99.9, 100.0, 150.0, 200.0, 201.0, 1e6, 12.25])
    together = _exposition("at once", values)
    assert together == _exposition("one by one", values)
    assert 'co2_test_g_km_bucket{le="+Inf"} 12.0' in together
    assert 'co2_test_g_km_bucket{le="25.0"} 5.0' in together
    assert "co2_test_g_km_count 12.0" in together


def test_observing_no_values_changes_nothing() -> None:
    assert _exposition("at once", np.array([])) == _exposition("one by one", np.array([]))
