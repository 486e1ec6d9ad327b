"""Dynamic batching: concurrent single-car requests share one vectorised model call.

A model call costs about the same for 1 car as for 30 (the work is per call, in Python, not per
row), so the service predicts everything that is waiting in one call. Nothing waits on a timer:
the batch closes once a few turns of the event loop bring no new request, so a lone request is
answered at once and a busy service batches by itself. Each request gets its own answer and
the version of the model that computed it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from co2.model import input_columns
from serving import metrics
from serving.registry import LoadedModel, ModelFollower

QUIET_TURNS = 3


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
            cars = input_columns([item.row for item in batch])
            try:
                values = model.predict(cars)
            except Exception as exc:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            metrics.observe_predictions(model.input_ranges, cars, values)
            for item, value in zip(batch, values.tolist(), strict=True):
                if not item.future.done():
                    item.future.set_result((value, model))
