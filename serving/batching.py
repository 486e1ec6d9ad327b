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
from co2_model.model import UNDECIDED, Answers, input_columns
from serving import metrics
from serving.registry import LoadedModel, ModelFollower

log = get_logger("co2.serving.batching")

QUIET_TURNS = 3


class UnpredictableCarError(ValueError):
    """The model raised, or gave no finite value, for this car (inputs within the declared ranges)."""


class NoModelError(RuntimeError):
    """No production model is loaded yet."""


class AmbiguousCarError(ValueError):
    """The car's inputs do not say what kind of car it is (a hybrid fuel type alone): the model does not answer."""


@dataclass(frozen=True)
class CarAnswer:
    """One car's answer: WLTP CO2, its 90 % interval (NaN: the model has none) and the method."""

    co2_g_km: float
    lower_g_km: float
    upper_g_km: float
    method: str


@dataclass(frozen=True)
class Predicted:
    answers: Answers  # CO2 NaN where the model gave no finite answer, with interval and method
    cars: dict[str, np.ndarray]  # the input columns

    @property
    def co2_g_km(self) -> np.ndarray:
        return self.answers.co2_g_km

    @property
    def ambiguous(self) -> np.ndarray:
        """Where the inputs do not say what kind of car it is."""
        return np.asarray(self.answers.method == UNDECIDED, dtype=bool)

    def car(self, i: int) -> CarAnswer:
        a = self.answers
        return CarAnswer(float(a.co2_g_km[i]), float(a.lower_g_km[i]), float(a.upper_g_km[i]), str(a.method[i]))


def predict_each(model: LoadedModel, rows: Sequence[Mapping[str, object]]) -> Predicted:
    """Every car's prediction, NaN for a car the model cannot predict.

    One car that makes the model raise must not fail the cars batched with it: the batch is split
    in halves until the culprit is alone, a few calls more only when a call fails. Each car's
    prediction depends on its own inputs only, so an infinite or NaN answer is that car's alone.
    """
    cars = input_columns(rows)
    n = len(rows)
    answers = Answers(np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan), np.full(n, "failed", dtype=object))
    try:
        answered = model.answer(cars)
        for mine, theirs in zip(_arrays(answers), _arrays(answered), strict=True):
            mine[:] = theirs
    except Exception as exc:
        if n == 1:
            log.error("car_not_predictable", version=model.version, car=dict(rows[0]), error=repr(exc))
        else:
            half = n // 2
            for part in (slice(None, half), slice(half, None)):
                parts = _arrays(predict_each(model, rows[part]).answers)
                for mine, theirs in zip(_arrays(answers), parts, strict=True):
                    mine[part] = theirs
    answers.co2_g_km[~np.isfinite(answers.co2_g_km)] = np.nan
    return Predicted(answers, cars)


def _arrays(answers: Answers) -> tuple[np.ndarray, ...]:
    return answers.co2_g_km, answers.lower_g_km, answers.upper_g_km, answers.method


@dataclass
class _Pending:
    row: dict[str, object]
    future: asyncio.Future[tuple[CarAnswer, LoadedModel]]


class Batcher:
    def __init__(self, follower: ModelFollower, max_batch: int = 256) -> None:
        self.follower = follower
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()

    async def predict(self, row: dict[str, object]) -> tuple[CarAnswer, LoadedModel]:
        future: asyncio.Future[tuple[CarAnswer, LoadedModel]] = asyncio.get_running_loop().create_future()
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
                    item.future.set_exception(NoModelError())
                continue
            try:
                predicted = predict_each(model, [item.row for item in batch])
            except Exception as exc:  # not the model's: building the inputs failed for everyone
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            metrics.observe_predictions(model.input_ranges, predicted.cars, predicted.co2_g_km)
            for i, item in enumerate(batch):
                if item.future.done():
                    continue
                answer = predicted.car(i)
                if np.isfinite(answer.co2_g_km):
                    item.future.set_result((answer, model))
                elif answer.method == UNDECIDED:
                    item.future.set_exception(AmbiguousCarError())
                else:
                    item.future.set_exception(UnpredictableCarError(f"model version {model.version}"))
