"""`co2 serve --workers N`: whichever worker a scrape reaches, /metrics counts the requests of all."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from co2.local import executable, free_port, start
from co2.settings import Settings
from tests.serving.conftest import promote, ready_version, wait_for

REQUESTS = 40


def samples(scraped: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
    }


def test_metrics_add_up_every_workers_requests(service_settings: Settings, model_uris, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    version = promote(service_settings.mlflow_tracking_uri, service_settings.model_name, model_uris["knn"])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(
        "co2-serve-workers",
        [executable("co2"), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        f"{url}/health",
        tmp_path / "serve.log",
        {
            "MLFLOW_TRACKING_URI": service_settings.mlflow_tracking_uri,
            "CO2_MODEL_NAME": service_settings.model_name,
            "CO2_POLL_SECONDS": "1",
            "CO2_API_KEYS": "[]",
        },
    )
    try:
        server.wait_healthy(120)
        # each /ready is a new connection, answered by either worker: both must have loaded the model
        wait_for(lambda: all(ready_version(url) == version for _ in range(10)), 90)
        car = {"fuel_type": "PETROL", "mass_kg": 1300, "engine_power_kw": 80}
        for _ in range(REQUESTS):
            assert httpx.post(f"{url}/predict", json=car).status_code == 200  # a new connection each time
        predict_200 = ("co2_http_requests_total", (("method", "POST"), ("route", "/predict"), ("status", "200")))
        for _ in range(6):
            scraped = samples(httpx.get(f"{url}/metrics").text)
            assert scraped[predict_200] == REQUESTS, scraped[predict_200]
            assert scraped[("co2_predictions_total", ())] == REQUESTS
            assert scraped[("co2_model_version", ())] == int(version)
            assert scraped[("co2_ready", ())] == 1.0
            assert scraped[("co2_registry_up", ())] == 1.0
            assert scraped[("co2_registry_last_success_timestamp_seconds", ())] > 1e9
    finally:
        server.stop()
