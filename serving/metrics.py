"""Prometheus metrics of the prediction service, exposed at /metrics.

With several worker processes (`co2 serve --workers N` sets PROMETHEUS_MULTIPROC_DIR), each
process writes its figures to files in that directory and /metrics adds them up, so any worker
answers for all. Gauges say how: `livemin` for the readiness of the service as a whole (it is
ready when every worker is), `livemax` for what is served. Multiprocess mode forbids callback
gauges, so every gauge is set when what it shows changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

# prometheus_client chooses its storage when imported: this is the same test it makes
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ
REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "co2_http_requests_total",
    "HTTP requests by route, method and status",
    ["route", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "co2_http_request_duration_seconds",
    "HTTP request latency by route and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
PREDICTIONS = Counter("co2_predictions_total", "Cars predicted", registry=REGISTRY)
PREDICTED_CO2 = Histogram(
    "co2_predicted_wltp_g_km",
    "Predicted WLTP CO2 emissions",
    buckets=(0, 25, 50, 75, 100, 125, 150, 175, 200, 250, 300, 400),
    registry=REGISTRY,
)
OUT_OF_RANGE = Counter(
    "co2_input_out_of_training_range_total",
    "Inputs outside the range the production model was trained on, by feature",
    ["feature"],
    registry=REGISTRY,
)
MODEL_INFO = Gauge(
    "co2_model_info",
    "The model being served (value 1)",
    ["model_name", "model_version", "run_id"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
MODEL_VERSION = Gauge(
    "co2_model_version", "Version number of the model being served", registry=REGISTRY, multiprocess_mode="livemax"
)
MODEL_LOADS = Counter("co2_model_loads_total", "Model versions loaded and swapped in", registry=REGISTRY)
MODEL_LOAD_FAILURES = Counter(
    "co2_model_load_failures_total", "Model versions refused (load or check failed)", registry=REGISTRY
)
REGISTRY_EVENTS = Counter(
    "co2_registry_events_total",
    "Registry webhook deliveries: accepted (woke the follower), ignored (another model), refused (bad signature)",
    ["outcome"],
    registry=REGISTRY,
)
REGISTRY_UP = Gauge(
    "co2_registry_up", "1 if the last registry poll succeeded", registry=REGISTRY, multiprocess_mode="livemin"
)
REGISTRY_LAST_SUCCESS = Gauge(
    "co2_registry_last_success_timestamp_seconds",
    "Unix time the registry was last reached (0: never)",
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
READY = Gauge(
    "co2_ready",
    "1 if a model is loaded and the registry was reached recently",
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
_shown_model_info: list[tuple[str, str, str]] = []


def set_model_info(name: str, version: str, run_id: str) -> None:
    # In multiprocess mode a series cannot be removed: the previous model's is set to 0.
    for labels in _shown_model_info:
        MODEL_INFO.labels(*labels).set(0)
    _shown_model_info.clear()
    if not MULTIPROCESS:
        MODEL_INFO.clear()
    MODEL_INFO.labels(model_name=name, model_version=version, run_id=run_id).set(1)
    _shown_model_info.append((name, version, run_id))
    if version.isdigit():
        MODEL_VERSION.set(int(version))


def exposition() -> bytes:
    """The text a scrape gets: this process's figures, or those of every worker added up."""
    if not MULTIPROCESS:
        return generate_latest(REGISTRY)
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)
    return generate_latest(merged)


def process_ended() -> None:
    """Drop this worker's live gauges from the shared figures (its counters keep counting in the sums)."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """`histogram.observe(v)` for each value, counted per bucket in one pass.

    prometheus_client observes one value at a time, under a lock: ~1 ms for a 1,000-car batch.
    This adds each bucket's count and the sum at once, through the same value objects `observe`
    updates, so a scrape reads the same (tests/serving/test_metrics.py checks it against the
    locked client version).
    """
    bounds = histogram._upper_bounds
    # a value falls in the first bucket whose upper bound is at least the value
    counts = np.bincount(np.searchsorted(np.asarray(bounds), values, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(values.sum()))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)


def observe_predictions(
    input_ranges: Mapping[str, list[float]], cars: Mapping[str, np.ndarray], co2_g_km: np.ndarray
) -> None:
    """Once per model call: cars predicted, their predictions, and inputs outside the training range.

    Cars the model could not predict (NaN in `co2_g_km`) are not counted.
    """
    predicted = np.isfinite(co2_g_km)
    PREDICTIONS.inc(int(np.count_nonzero(predicted)))
    observe_many(PREDICTED_CO2, co2_g_km[predicted])
    for feature, (low, high) in input_ranges.items():
        given = cars.get(feature)
        if given is None:
            continue
        with np.errstate(invalid="ignore"):
            outside = int(np.count_nonzero(((given < low) | (given > high)) & predicted))
        if outside:
            OUT_OF_RANGE.labels(feature=feature).inc(outside)
