"""Prometheus metrics of the prediction service (one registry, exposed at /metrics)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
    "co2_model_info", "The model being served (value 1)", ["model_name", "model_version", "run_id"], registry=REGISTRY
)
MODEL_VERSION = Gauge("co2_model_version", "Version number of the model being served", registry=REGISTRY)
MODEL_LOADS = Counter("co2_model_loads_total", "Model versions loaded and swapped in", registry=REGISTRY)
MODEL_LOAD_FAILURES = Counter(
    "co2_model_load_failures_total", "Model versions refused (load or check failed)", registry=REGISTRY
)
REGISTRY_UP = Gauge("co2_registry_up", "1 if the last registry poll succeeded", registry=REGISTRY)
REGISTRY_SECONDS_SINCE_POLL = Gauge(
    "co2_registry_seconds_since_last_success", "Seconds since the registry was last reached", registry=REGISTRY
)
READY = Gauge("co2_ready", "1 if a model is loaded and the registry was reached recently", registry=REGISTRY)


def set_model_info(name: str, version: str, run_id: str) -> None:
    MODEL_INFO.clear()
    MODEL_INFO.labels(model_name=name, model_version=version, run_id=run_id).set(1)
    if version.isdigit():
        MODEL_VERSION.set(int(version))


def observe_predictions(
    input_ranges: Mapping[str, list[float]], cars: Mapping[str, np.ndarray], co2_g_km: np.ndarray
) -> None:
    """Once per model call: cars predicted, their predictions, and inputs outside the training range."""
    PREDICTIONS.inc(len(co2_g_km))
    for value in co2_g_km.tolist():
        PREDICTED_CO2.observe(value)
    for feature, (low, high) in input_ranges.items():
        given = cars.get(feature)
        if given is None:
            continue
        with np.errstate(invalid="ignore"):
            outside = int(np.count_nonzero((given < low) | (given > high)))
        if outside:
            OUT_OF_RANGE.labels(feature=feature).inc(outside)
