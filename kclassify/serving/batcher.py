"""Micro-batching: concurrent requests share one model call.

Requests put their decoded image on a queue and await a future. One task takes the first
waiting image and, while more requests are on their way (decoding), waits up to the batch
timeout for them, up to ``max_batch`` images; the model then runs once, in its own thread, on
the stack, and each future gets its row. A request that arrives alone, with nothing else in
flight, runs at once: the timeout bounds the wait, it is not a fixed delay (a fixed 5 ms wait
would add 5 ms to every single-client request, more than LiteRT's invoke of a small model takes;
measured: docs/benchmarks.md, "kclassify serve under load").
While the model thread is busy, newcomers queue up and form the next batch.

The model runs in a single thread: a LiteRT interpreter must not be invoked from two threads,
and one busy thread already uses what a model call can (XNNPACK's own threads, TF's pool).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


class Batcher:
    """Groups single images into batches for ``predict_batch`` (uint8 ``(N, S, S, 3)`` -> ``(N, C)``).

    Args:
        observe: called with each batch's size (the server's batch-size histogram).
    """

    def __init__(self, predict_batch: Callable[[np.ndarray], np.ndarray], max_batch: int = 16,
                 timeout_ms: float = 5.0, observe: Callable[[int], None] = lambda n: None):
        self.predict_batch = predict_batch
        self.max_batch = int(max_batch)
        self.timeout = float(timeout_ms) / 1000.0
        self.observe = observe
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="kclassify-model")
        self.incoming = 0  # requests decoding now: worth waiting for
        self.batches = 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="kclassify-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop (the server stops taking requests before this)."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._model_thread.shutdown(wait=True)
        self._task = None

    def expect(self) -> None:
        """A request started decoding: the batcher may wait (at most the timeout) for it."""
        self.incoming += 1

    async def predict(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities of one decoded image, computed in a batch with its neighbours."""
        future = asyncio.get_running_loop().create_future()
        self.incoming = max(0, self.incoming - 1)
        await self._queue.put((image, future))
        return await future

    def cancel(self) -> None:
        """A request that called :meth:`expect` will not arrive (its decode failed)."""
        self.incoming = max(0, self.incoming - 1)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.timeout
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if self.incoming == 0 or remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            await self._run_batch(loop, batch)

    async def _run_batch(self, loop, batch: list) -> None:
        images = np.stack([image for image, _ in batch])
        try:
            probs = await loop.run_in_executor(self._model_thread, self.predict_batch, images)
        except Exception as e:  # noqa: BLE001 - every waiting request gets the model's error
            log.exception("the model failed on a batch of %d", len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
        else:
            for (_, future), row in zip(batch, probs):
                if not future.done():  # its client may have gone
                    future.set_result(row)
        finally:
            self.batches += 1
            self.observe(len(batch))
            for _ in batch:
                self._queue.task_done()
