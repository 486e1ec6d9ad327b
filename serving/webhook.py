"""Learn of a promotion when it happens: MLflow's registry webhook on alias changes, HMAC-signed.

MLflow 3 sends `model_version_alias.created` and `.deleted` events to the webhooks registered for them
(SQL backends only). The service registers its own at start (`CO2_WEBHOOK_URL`, `CO2_WEBHOOK_SECRET`),
checks each delivery's signature and age, and on an event for its model and alias polls the registry at
once instead of at the next interval. Polling stays: it is how the service learns of a promotion when a
delivery is lost, the backend has no webhooks, or the webhook is not configured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from co2.logs import get_logger
from co2.settings import Settings

log = get_logger("co2.serving.webhook")

# MLflow's delivery headers and signature scheme (mlflow.webhooks.delivery): HMAC-SHA256 over
# "<delivery id>.<timestamp>.<body>", base64, prefixed by the scheme's version.
SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
# A delivery older (or further in the future) than this is refused: a captured one cannot be replayed later.
MAX_AGE_SECONDS = 300
EVENTS = ("model_version_alias.created", "model_version_alias.deleted")
WEBHOOK_NAME = "co2-prediction-service"


class WebhookRefusedError(ValueError):
    """A delivery that is not MLflow's, or not recent; the message is safe to answer with."""


@dataclass(frozen=True)
class AliasEvent:
    action: str  # created | deleted
    model: str
    alias: str
    version: str


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> AliasEvent | None:
    """The alias event a signed delivery carries (None for another kind of event), or WebhookRefusedError."""
    signature, timestamp, delivery = (
        headers.get(h.lower(), "") for h in (SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_ID_HEADER)
    )
    if not (signature and timestamp and delivery):
        raise WebhookRefusedError(f"not signed: send {SIGNATURE_HEADER}, {TIMESTAMP_HEADER} and {DELIVERY_ID_HEADER}")
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        raise WebhookRefusedError(f"{TIMESTAMP_HEADER} is not a Unix time in seconds") from None
    if age > MAX_AGE_SECONDS:
        raise WebhookRefusedError(f"the delivery is {age:.0f} s old; at most {MAX_AGE_SECONDS} s are accepted")
    signed = f"{delivery}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(signature.encode(), f"{SIGNATURE_VERSION},{expected}".encode()):
        raise WebhookRefusedError("the signature does not match: the webhook's secret is not CO2_WEBHOOK_SECRET")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WebhookRefusedError("the body is not JSON") from None
    if not isinstance(payload, dict) or payload.get("entity") != "model_version_alias":
        return None
    data = payload["data"] if isinstance(payload.get("data"), dict) else {}
    return AliasEvent(
        str(payload.get("action", ""))[:20],
        str(data.get("name", ""))[:256],
        str(data.get("alias", ""))[:256],
        str(data.get("version", ""))[:20],
    )


def ensure_webhook(client: Any, settings: Settings) -> str:
    """Register (or refresh) the service's webhook on the registry; returns its id. Refreshing rewrites
    the URL and the secret, so a webhook left by an earlier start, or stored under another key, works."""
    secret = settings.webhook_secret.get_secret_value()
    description = f"co2 prediction service: {settings.model_name}@{settings.model_alias} changes (signed)"
    page_token = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=page_token)
        for hook in page:
            if hook.name == WEBHOOK_NAME and hook.url == settings.webhook_url:
                client.update_webhook(
                    hook.webhook_id, url=settings.webhook_url, events=list(EVENTS), secret=secret, status="ACTIVE"
                )
                return str(hook.webhook_id)
        page_token = page.token
        if not page_token:
            break
    created = client.create_webhook(
        name=WEBHOOK_NAME, url=settings.webhook_url, events=list(EVENTS), description=description, secret=secret
    )
    return str(created.webhook_id)
