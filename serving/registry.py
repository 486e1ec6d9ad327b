"""Follow the registry: find the production version, load it off the request path, check it, swap it in.

The current model is one reference, replaced in a single assignment: a request reads it once and
predicts with that model from start to end, so a swap never mixes versions and never fails a
request. A version that cannot be loaded or checked is refused and reported; the previous model
keeps serving. When the registry cannot be reached, the last good model keeps serving too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from co2.logs import get_logger
from co2.mlflow_utils import (
    UntrustedModelError,
    current_production,
    download_version,
    load_trusted_model,
    mlflow_client,
)
from co2.redact import redact_urls
from co2.settings import Settings
from co2.tags import LINEAGE_TAGS, METRIC_TAG_PREFIXES, METRIC_TAGS, PREFIX
from co2.training_summary import TrainingSummary, from_metadata
from co2_model import columns as col
from co2_model.engine import Columns
from co2_model.model import Answers, answer_columns, input_columns, predict_columns
from serving import metrics
from serving.webhook import ensure_webhook

log = get_logger("co2.serving.registry")

# How often the follower looks whether a registry event asked it to poll now.
WAKE_CHECK_SECONDS = 0.1
WAKE_FILE_ENV = "CO2_SERVING_WAKE_FILE"


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    run_id: str | None
    model: Any
    loaded_at: datetime
    metrics: dict[str, float]
    lineage: dict[str, str]
    input_ranges: dict[str, list[float]]
    training_summary: TrainingSummary | None = None

    def predict(self, cars: Columns) -> np.ndarray:
        return predict_columns(self.model, cars)

    def answer(self, cars: Columns) -> Answers:
        """Each car's CO2 with how it was made (`ambiguous`: the inputs do not say what kind of car)."""
        return answer_columns(self.model, cars)


def _metrics(tags: dict[str, str]) -> dict[str, float]:
    """The version's metrics from its tags; one that is not a finite number is left out, not fatal."""
    found = {}
    for key, value in tags.items():
        if key in METRIC_TAGS or key.startswith(METRIC_TAG_PREFIXES):
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(number):
                found[key.removeprefix(PREFIX)] = number
    return found


def _training_summary(metadata: Any, version: Any) -> TrainingSummary | None:
    """The summary of the training cars stored with the version, if any; a malformed one is dropped
    (the version is served without it) and logged."""
    try:
        return from_metadata(metadata)
    except ValueError as exc:
        log.warning("training_summary_refused", version=version, error=str(exc)[:300])
        return None


class RefusedModelError(ValueError):
    """A version failed the service's checks; the message is short and safe to show on /ready."""


@dataclass
class RegistryState:
    """What the service knows about the registry, for /ready and the metrics."""

    last_success: float | None = None
    reachable: bool = False
    last_error: str | None = None
    refused_versions: dict[str, str] = field(default_factory=dict)
    # how the service learns of a promotion: "webhook <id>", or why it only polls
    registry_events: str = "polling only: CO2_WEBHOOK_URL and CO2_WEBHOOK_SECRET are not set"


class ModelFollower:
    """Holds the current model and polls the registry for the production version."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: LoadedModel | None = None
        self.state = RegistryState()
        self.webhook_id: str | None = None
        self._webhook_retry_at = 0.0  # after a refusal, ask again only every ten polls
        self.last_load_seconds: dict[str, float] = {}
        self._woken_by: str | None = None  # the event that asked for a poll now, until the poll takes it
        # Several worker processes: a webhook delivery reaches one of them, which wakes the others
        # through this file's modification time (set by `co2 serve --workers`).
        self._wake_file = Path(os.environ[WAKE_FILE_ENV]) if os.environ.get(WAKE_FILE_ENV) else None
        self._wake_seen = self._wake_mtime()

    def wake(self, why: str) -> None:
        """Poll the registry now (a webhook said the alias moved), in this process and its siblings."""
        self._woken_by = why
        if self._wake_file is not None:
            with contextlib.suppress(OSError):
                self._wake_file.touch()

    def _wake_mtime(self) -> int:
        try:
            return self._wake_file.stat().st_mtime_ns if self._wake_file is not None else 0
        except OSError:
            return 0

    def _woken(self) -> str | None:
        why, self._woken_by = self._woken_by, None
        if why is None and (seen := self._wake_mtime()) != self._wake_seen:
            self._wake_seen, why = seen, "a sibling worker's registry event"
        return why

    def seconds_since_poll(self) -> float:
        if self.state.last_success is None:
            return float("inf")
        return time.time() - self.state.last_success

    def stale(self) -> bool:
        """The registry was not reached for three poll intervals."""
        return self.seconds_since_poll() > 3 * self.settings.poll_seconds

    def poll_once(self, woken_by: str | None = None) -> None:
        """One look at the registry; loads and swaps in a new production version if there is one."""
        try:
            self._poll(woken_by)
        finally:
            self.observe_readiness()

    def observe_readiness(self) -> None:
        """Set the readiness gauge: after each poll, and before each scrape (a poll can hang for minutes)."""
        metrics.READY.set(float(self.current is not None and not self.stale()))

    def _register_webhook(self, client: Any) -> None:
        """Ask the registry to tell this service of alias changes; on failure, say so and keep polling."""
        if not (self.settings.webhook_url and self.settings.webhook_secret.get_secret_value()):
            return
        if time.monotonic() < self._webhook_retry_at:
            return
        try:
            self.webhook_id = ensure_webhook(client, self.settings)
        except Exception as exc:  # an older server, a file backend, a refused URL: polling still works
            self._webhook_retry_at = time.monotonic() + 10 * self.settings.poll_seconds
            self.state.registry_events = (
                f"polling every {self.settings.poll_seconds:g} s: the registry refused the webhook "
                f"({type(exc).__name__}); see the service log"
            )
            log.warning("webhook_not_registered", url=self.settings.webhook_url, error=str(exc)[:300])
            return
        self.state.registry_events = f"webhook {self.webhook_id} -> {self.settings.webhook_url}, and polling"
        log.info("webhook_registered", webhook_id=self.webhook_id, url=self.settings.webhook_url)

    def _poll(self, woken_by: str | None = None) -> None:
        try:
            client = mlflow_client(self.settings, process_default=False)
            if self.webhook_id is None:
                self._register_webhook(client)
            version = current_production(client, self.settings)
        except Exception as exc:  # unreachable, or answering errors: keep serving what we have
            self.state.reachable = False
            self.state.last_error = f"registry unreachable: {type(exc).__name__}"
            metrics.REGISTRY_UP.set(0)
            log.warning("registry_poll_failed", error=str(exc)[:300])
            return
        self.state.reachable = True
        self.state.last_success = time.time()
        metrics.REGISTRY_UP.set(1)
        metrics.REGISTRY_LAST_SUCCESS.set(self.state.last_success)
        if version is None:
            self.state.last_error = f"no version of {self.settings.model_name} is in {self.settings.model_alias}"
            return
        current = self.current
        if current is not None and current.version == str(version.version):
            return
        if str(version.version) in self.state.refused_versions:
            return  # already tried and refused; a new promotion will change the version
        if woken_by is None and self.webhook_id is not None and current is not None:
            self.webhook_id = None  # a promotion the webhook did not announce: register it again next poll
        began = time.monotonic()
        try:
            loaded = self._load(client, version)
        except Exception as exc:
            # /ready says why in a sentence of ours; what the exception says goes to the log only
            if isinstance(exc, UntrustedModelError | RefusedModelError):
                reason = str(exc)
            else:
                reason = f"it could not be loaded ({type(exc).__name__})"
            self.state.refused_versions[str(version.version)] = reason
            self.state.last_error = f"version {version.version} refused: {reason}; see the service log"
            metrics.MODEL_LOAD_FAILURES.inc()
            log.error(
                "model_refused",
                version=version.version,
                reason=reason,
                error=repr(exc),
                detail=getattr(exc, "detail", None),
            )
            return
        self.current = loaded  # the swap: one reference assignment
        # Long-lived from here on: keep the model (and the libraries) out of the garbage
        # collector's full passes, which otherwise stall requests for tens of milliseconds.
        gc.collect()
        gc.freeze()
        self.state.last_error = None
        metrics.MODEL_LOADS.inc()
        metrics.set_model_info(loaded.name, loaded.version, loaded.run_id or "")
        log.info(
            "model_swapped_in",
            version=loaded.version,
            previous=current.version if current else None,
            mae_g_km=loaded.metrics.get("mae_g_km"),
            load_seconds=round(time.monotonic() - began, 2),
            **self.last_load_seconds,
            learned_from=woken_by or "poll",
        )

    def _load(self, client: Any, version: Any) -> LoadedModel:
        from mlflow.models import Model

        began = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="co2-model-") as tmp:
            local = download_version(
                client, self.settings.mlflow_tracking_uri, self.settings.model_name, str(version.version), tmp
            )
            downloaded = time.monotonic()
            model = load_trusted_model(local)  # refuses before deserializing anything untrusted
            mlmodel = Model.load(local)
            example = mlmodel.load_input_example(local)
            deserialized = time.monotonic()
        summary = _training_summary(mlmodel.metadata, version.version)
        if example is None:
            raise RefusedModelError("it has no input example to check it with")
        frame = pd.DataFrame(example).reindex(columns=col.MODEL_INPUT_COLUMNS)
        answered = model.predict(frame)  # the CO2 alone, or a frame of it with its interval
        predicted = np.asarray(answered[col.TARGET] if isinstance(answered, pd.DataFrame) else answered, dtype=float)
        # NaN is a car the model does not answer for; some of the example it must answer, all sanely
        if (
            predicted.shape != (len(frame),)
            or np.isnan(predicted).all()
            or np.isinf(predicted).any()
            or (predicted < 0).any()
        ):
            log.error("model_not_sane", version=version.version, predicted=predicted[:5].tolist())
            raise RefusedModelError("its predictions on its own input example are not sane")
        # requests take the array path: it must answer as the model itself does
        records = cast(list[dict[str, Any]], frame.to_dict(orient="records"))
        served = predict_columns(model, input_columns(records))
        if not np.allclose(served, predicted, rtol=1e-9, atol=1e-9, equal_nan=True):
            log.error("model_array_path_differs", served=served[:5].tolist(), predicted=predicted[:5].tolist())
            raise RefusedModelError("the service's array path disagrees with the model")
        tags = version.tags or {}
        features = getattr(model, "named_steps", {}).get("features")
        # where a load's time goes, for the log (and bench/promotion_to_served.py)
        self.last_load_seconds = {
            "download_seconds": round(downloaded - began, 3),
            "deserialize_seconds": round(deserialized - downloaded, 3),
            "check_seconds": round(time.monotonic() - deserialized, 3),
        }
        return LoadedModel(
            name=self.settings.model_name,
            version=str(version.version),
            run_id=version.run_id,
            model=model,
            loaded_at=datetime.now(UTC),
            metrics=_metrics(tags),
            # a source URL can carry credentials: shown without them
            lineage=redact_urls(
                {k.removeprefix(PREFIX): v for k, v in tags.items() if k.endswith("sha256") or k in LINEAGE_TAGS}
            ),
            input_ranges=dict(getattr(features, "input_ranges_", {}) or {}),
            training_summary=summary,
        )

    async def run(self) -> None:
        """Poll forever (the lifespan cancels it), off the event loop: every `poll_seconds`, and at once
        when a registry event wakes it (checked every WAKE_CHECK_SECONDS: one attribute and one stat)."""
        why: str | None = None
        while True:
            began = time.monotonic()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.poll_once, why)
            why = None
            while why is None and time.monotonic() - began < self.settings.poll_seconds:
                await asyncio.sleep(WAKE_CHECK_SECONDS)
                why = self._woken()
