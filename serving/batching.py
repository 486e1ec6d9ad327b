"""Dynamic batching: concurrent single-car requests share one vectorised model call.

A model call costs about the same for 1 car as for 30 (the work is per call, in Python, not per
row), so under load the service gathers what arrives within a millisecond or two and predicts it
at once. Each request gets its own answer and the version of the model that computed it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pandas as pd

from co2 import columns as col
from serving.registry import LoadedModel, ModelFollower


@dataclass
class _Pending:
    row: dict[str, object]
    future: asyncio.Future[tuple[float, LoadedModel]]


class Batcher:
    def __init__(self, follower: ModelFollower, max_batch: int = 64, max_wait_seconds: float = 0.002) -> None:
        self.follower = follower
        self.max_batch = max_batch
        self.max_wait_seconds = max_wait_seconds
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()

    async def predict(self, row: dict[str, object]) -> tuple[float, LoadedModel]:
        future: asyncio.Future[tuple[float, LoadedModel]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(row, future))
        return await future

    async def run(self) -> None:
        """Forever: take what is waiting (up to max_batch), predict it in a worker thread, answer."""
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self.max_wait_seconds
            while len(batch) < self.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0 and self._queue.empty():
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), max(timeout, 0)))
                except TimeoutError:
                    break
            model = self.follower.current
            if model is None:
                for item in batch:
                    item.future.set_exception(RuntimeError("no model loaded"))
                continue
            frame = pd.DataFrame.from_records([item.row for item in batch], columns=col.MODEL_INPUT_COLUMNS)
            try:
                values = await asyncio.to_thread(model.predict, frame)
            except Exception as exc:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item, value in zip(batch, values, strict=True):
                if not item.future.done():
                    item.future.set_result((float(value), model))
