"""Dynamic batching: concurrent single-car requests share one vectorised model call.

A model call costs about the same for 1 car as for 30 (the work is per call, in Python, not per
row), so the service predicts everything that is waiting in one call. Nothing waits on a timer:
the batch closes once a few turns of the event loop bring no new request, so a lone request is
answered at once and a busy service batches by itself. Each request gets its own answer and
the version of the model that computed it; a car the model cannot predict fails its own request
only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from co2.logs import get_logger
from co2.model import UNDECIDED, input_columns
from serving import metrics
from serving.registry import LoadedModel, ModelFollower

log = get_logger("co2.serving.batching")

QUIET_TURNS = 3


class UnpredictableCarError(ValueError):
    """The model raised, or gave no finite value, for this car (inputs within the declared ranges)."""


class AmbiguousCarError(ValueError):
    """The car's inputs do not say what kind of car it is (a hybrid fuel type alone): the model does not answer."""


@dataclass(frozen=True)
class Predicted:
    co2_g_km: np.ndarray  # NaN where the model gave no finite answer
    ambiguous: np.ndarray  # where that is because the inputs do not say what kind of car it is
    cars: dict[str, np.ndarray]  # the input columns


def predict_each(model: LoadedModel, rows: Sequence[Mapping[str, object]]) -> Predicted:
    """Every car's prediction, NaN for a car the model cannot predict.

    One car that makes the model raise must not fail the cars batched with it: the batch is split
    in halves until the culprit is alone, a few calls more only when a call fails. Each car's
    prediction depends on its own inputs only, so an infinite or NaN answer is that car's alone.
    """
    cars = input_columns(rows)
    values = np.full(len(rows), np.nan)
    ambiguous = np.zeros(len(rows), dtype=bool)
    try:
        answers = model.answer(cars)
        values[:] = answers.co2_g_km
        ambiguous[:] = answers.method == UNDECIDED
    except Exception as exc:
        if len(rows) == 1:
            log.error("car_not_predictable", version=model.version, car=dict(rows[0]), error=repr(exc))
        else:
            half = len(rows) // 2
            for part in (slice(None, half), slice(half, None)):
                predicted = predict_each(model, rows[part])
                values[part], ambiguous[part] = predicted.co2_g_km, predicted.ambiguous
    return Predicted(np.where(np.isfinite(values), values, np.nan), ambiguous, cars)


@dataclass
class _Pending:
    row: dict[str, object]
    future: asyncio.Future[tuple[float, LoadedModel]]


class Batcher:
    def __init__(self, follower: ModelFollower, max_batch: int = 256) -> None:
        self.follower = follower
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()

    async def predict(self, row: dict[str, object]) -> tuple[float, LoadedModel]:
        future: asyncio.Future[tuple[float, LoadedModel]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(row, future))
        return await future

    async def run(self) -> None:
        """Forever: take what is waiting (up to max_batch), predict it in one call, answer each.

        The call runs on the event loop: it takes a few milliseconds, and a thread hop would only
        add the cost of passing the interpreter lock back and forth with the request parsing.
        """
        while True:
            batch = [await self._queue.get()]
            # Let requests that are already on their way through the loop join: a few turns of
            # the loop cost microseconds, a model call per request costs milliseconds.
            quiet_turns = 0
            while len(batch) < self.max_batch and quiet_turns < QUIET_TURNS:
                await asyncio.sleep(0)
                if self._queue.empty():
                    quiet_turns += 1
                    continue
                quiet_turns = 0
                while len(batch) < self.max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
            model = self.follower.current
            if model is None:
                for item in batch:
                    item.future.set_exception(RuntimeError("no model loaded"))
                continue
            try:
                predicted = predict_each(model, [item.row for item in batch])
            except Exception as exc:  # not the model's: building the inputs failed for everyone
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            metrics.observe_predictions(model.input_ranges, predicted.cars, predicted.co2_g_km)
            answers = zip(batch, predicted.co2_g_km.tolist(), predicted.ambiguous.tolist(), strict=True)
            for item, value, ambiguous in answers:
                if item.future.done():
                    continue
                if np.isfinite(value):
                    item.future.set_result((value, model))
                elif ambiguous:
                    item.future.set_exception(AmbiguousCarError())
                else:
                    item.future.set_exception(UnpredictableCarError(f"model version {model.version}"))
