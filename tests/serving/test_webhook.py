"""A promotion reaches the service through MLflow's registry webhook, signed, without waiting for a poll.

The signatures are made by MLflow's own delivery code, and the end-to-end case uses the real MLflow
server (PostgreSQL backend) delivering to the service on loopback.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.webhooks.delivery import _generate_hmac_signature

from co2.settings import Settings
from serving.webhook import (
    DELIVERY_ID_HEADER,
    MAX_AGE_SECONDS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AliasEvent,
    WebhookRefusedError,
    verify,
)
from tests.serving.conftest import promote, ready_version, running_service, wait_for

SECRET = "s3cret-for-the-test"


def delivery(body: dict, secret: str = SECRET, at: float | None = None) -> tuple[dict[str, str], bytes]:
    """Headers and body as MLflow's webhook delivery sends them."""
    payload = json.dumps(body)
    delivery_id, timestamp = str(uuid.uuid4()), str(int(time.time() if at is None else at))
    headers = {
        SIGNATURE_HEADER: _generate_hmac_signature(secret, delivery_id, timestamp, payload),
        TIMESTAMP_HEADER: timestamp,
        DELIVERY_ID_HEADER: delivery_id,
        "Content-Type": "application/json",
    }
    return headers, payload.encode()


ALIAS_SET = {
    "entity": "model_version_alias",
    "action": "created",
    "data": {"name": "co2-emissions", "alias": "production", "version": "7"},
}


def accepted_events(url: str) -> float:
    """`co2_registry_events_total{outcome="accepted"}`, 0 before the first (a labelled counter starts absent)."""
    sample = 'co2_registry_events_total{outcome="accepted"} '
    lines = [line for line in httpx.get(f"{url}/metrics").text.splitlines() if line.startswith(sample)]
    return float(lines[0].split()[1]) if lines else 0.0


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_a_delivery_signed_by_mlflow_is_read_and_anything_else_refused() -> None:
    headers, body = delivery(ALIAS_SET)
    assert verify(SECRET, lower(headers), body) == AliasEvent("created", "co2-emissions", "production", "7")

    with pytest.raises(WebhookRefusedError, match="signature does not match"):
        verify("another secret", lower(headers), body)
    with pytest.raises(WebhookRefusedError, match="signature does not match"):
        verify(SECRET, lower(headers), body.replace(b'"7"', b'"1"'))  # the body changed on the way
    with pytest.raises(WebhookRefusedError, match="not signed"):
        verify(SECRET, {}, body)
    old_headers, old_body = delivery(ALIAS_SET, at=time.time() - MAX_AGE_SECONDS - 60)
    with pytest.raises(WebhookRefusedError, match="old"):
        verify(SECRET, lower(old_headers), old_body)  # a captured delivery replayed later


def test_an_event_of_another_kind_is_acknowledged_not_acted_on() -> None:
    other = {"entity": "model_version", "action": "created", "data": {"name": "co2-emissions", "version": "8"}}
    headers, body = delivery(other)
    assert verify(SECRET, lower(headers), body) is None


def test_a_promotion_reaches_the_service_by_webhook_before_any_poll(  # type: ignore[no-untyped-def]
    mlflow_uri: str, model_uris
) -> None:
    # a poll every 10 minutes: only the webhook can bring the new version within seconds
    settings = Settings(mlflow_tracking_uri=mlflow_uri, model_name=f"co2-hook-{uuid.uuid4().hex[:8]}", poll_seconds=600)
    first = promote(mlflow_uri, settings.model_name, model_uris["knn"])
    with running_service(settings, webhook_secret=SECRET) as url:
        wait_for(lambda: ready_version(url) == first, 60)
        said = httpx.get(f"{url}/ready").json()["registry_events"]
        assert said.startswith("webhook ") and f"{url}/registry/events" in said
        hooks = MlflowClient(mlflow_uri, registry_uri=mlflow_uri).list_webhooks(max_results=100)
        assert [h.url for h in hooks if h.url == f"{url}/registry/events"] == [f"{url}/registry/events"]
        time.sleep(6)  # MLflow caches its list of webhooks for MLFLOW_WEBHOOK_CACHE_TTL (5 s)
        accepted = accepted_events(url)

        second = promote(mlflow_uri, settings.model_name, model_uris["linear_regression"])
        seconds = wait_for(lambda: ready_version(url) == second, 20, every=0.05)
        assert seconds < 10, seconds  # not the 600 s poll
        assert accepted_events(url) >= accepted + 1

        # a forged event (no signature, or signed with another secret) is refused and changes nothing
        refused = httpx.post(f"{url}/registry/events", json=ALIAS_SET)
        assert refused.status_code == 401 and "not signed" in refused.json()["detail"]
        headers, body = delivery({**ALIAS_SET, "data": {**ALIAS_SET["data"], "name": settings.model_name}}, "guess")
        forged = httpx.post(f"{url}/registry/events", content=body, headers=headers)
        assert forged.status_code == 401 and "does not match" in forged.json()["detail"]
        assert ready_version(url) == second
