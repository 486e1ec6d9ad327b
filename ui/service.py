"""The prediction service as the page sees it: its REST API over httpx, the API key added here, server-side.

Whatever goes wrong on the way becomes `ServiceUnavailable` with a sentence for the page (what happened and
what to do), never a traceback; a refusal of the request itself (422, 413) is `Refused` with the service's
own details (`loc`, `msg`, `type`), which `ui.wording` turns into plain words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from co2 import http_client
from co2.settings import Settings

API_KEY_HEADER = "X-API-Key"
TIMEOUT_SECONDS = 60.0  # a 10,000-car CSV takes a few seconds; a single car, milliseconds


class ServiceUnavailable(Exception):  # noqa: N818  (what the page says, not a programming error)
    """The service cannot answer now; the message is a sentence for the page."""


@dataclass(frozen=True)
class Refused:
    """The service refused the request: each problem where and what, as the API gives it."""

    errors: list[dict[str, Any]]


@dataclass(frozen=True)
class Readiness:
    ready: bool
    model_version: str | None
    reasons: list[str] = field(default_factory=list)
    last_error: str | None = None


class PredictionService:
    """GET /ready and /model, POST /predict and /predict/batch/csv, with the page's API key if it has one."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_seconds: float = TIMEOUT_SECONDS) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {API_KEY_HEADER: api_key} if api_key else {}
        self._timeout = timeout_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> PredictionService:
        """CO2_UI_API_URL (default: the service on this machine's CO2_API_PORT), and CO2_UI_API_KEY or the
        first of CO2_API_KEYS."""
        url = settings.ui_api_url or f"http://127.0.0.1:{settings.api_port}"
        key = settings.ui_api_key.get_secret_value() or next(iter(settings.api_keys), None)
        return cls(url, key)

    def readiness(self) -> Readiness:
        answer = self._request("GET", "/ready")
        if answer.status_code not in (200, 503):
            raise self._failure(answer)
        body = answer.json()
        return Readiness(
            ready=bool(body.get("ready")),
            model_version=body.get("model_version"),
            reasons=[str(reason) for reason in body.get("reasons") or []],
            last_error=body.get("last_error"),
        )

    def model(self) -> dict[str, Any]:
        """What GET /model says about the production model."""
        answer = self._request("GET", "/model")
        if answer.status_code != 200:
            raise self._failure(answer)
        body: dict[str, Any] = answer.json()
        return body

    def predict(self, car: dict[str, Any]) -> dict[str, Any] | Refused:
        return self._answer(self._request("POST", "/predict", json=car))

    def predict_csv(self, content: bytes, filename: str = "cars.csv") -> dict[str, Any] | Refused:
        files = {"file": (filename, content, "text/csv")}
        return self._answer(self._request("POST", "/predict/batch/csv", files=files))

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            # the process's client: a new one per request would build a TLS context each time
            return http_client.shared().request(
                method, f"{self.base_url}{path}", headers=self._headers, timeout=self._timeout, **kwargs
            )
        except httpx.TimeoutException:
            raise ServiceUnavailable(
                f"The prediction service at {self.base_url} did not answer within {self._timeout:.0f} seconds. "
                "Try again in a moment, or with fewer cars at once."
            ) from None
        except httpx.HTTPError:
            raise ServiceUnavailable(
                f"The prediction service at {self.base_url} does not answer. Start it (`co2 up`, or `co2 serve`), "
                "or point this page at it with CO2_UI_API_URL."
            ) from None

    def _answer(self, answer: httpx.Response) -> dict[str, Any] | Refused:
        if answer.status_code == 200:
            body: dict[str, Any] = answer.json()
            return body
        if answer.status_code == 422:
            return Refused(list(_json(answer).get("detail") or []))
        if answer.status_code == 413:  # too many cars or too large a file: the service says which
            return Refused([{"loc": ["body", "file"], "msg": str(_json(answer).get("detail")), "type": "too_large"}])
        raise self._failure(answer)

    def _failure(self, answer: httpx.Response) -> ServiceUnavailable:
        if answer.status_code in (401, 403):
            return ServiceUnavailable(
                f"The prediction service refused this page's API key ({answer.status_code}). "
                "Set CO2_UI_API_KEY (or CO2_API_KEYS) where the page runs to a key the service accepts."
            )
        if answer.status_code == 503:
            return ServiceUnavailable(
                "The prediction service has no model to answer with yet: it answers once a model version is "
                "in production (run the retraining DAG, e.g. `co2 trigger`)."
            )
        return ServiceUnavailable(
            f"The prediction service could not answer ({answer.status_code}); its log says why. Try again later."
        )


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
