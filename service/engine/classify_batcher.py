"""Dynamic batching for Classify: texts from concurrent requests are run as one padded batch.

A batch closes when it holds max_batch texts or max_batch_tokens tokens, or when its first text has
waited max_delay_ms; the model calls run on the model's own thread (the runner splits a batch so that
no call pads past max_batch_tokens), and texts arriving meanwhile form the next batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.errors import ResourceExhausted, Unavailable
from service.metrics import ClassifyMetrics
from service.models.runners import ClassifierRunner


class Batcher:
    def __init__(self, name: str, version: int, runner: ClassifierRunner, max_batch: int, max_delay_ms: float,
                 max_queue: int, max_batch_tokens: int) -> None:
        self.name, self.runner = name, runner
        self.max_batch, self.max_delay, self.max_queue = max_batch, max_delay_ms / 1000, max_queue
        self.max_batch_tokens = max_batch_tokens
        self.m = ClassifyMetrics.bind(name, version)
        self.pending: deque[tuple[np.ndarray, asyncio.Future, float]] = deque()
        self.pending_tokens = 0
        self.arrived = asyncio.Event()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"classify-{name}-{version}")
        self.stopping = False
        self.n_open = 0  # requests inside classify(): a retired version closes once it is 0
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def classify(self, rows: list[np.ndarray]) -> np.ndarray:
        """Probabilities (n, C) for n token rows, in order."""
        if self.stopping:
            raise Unavailable("the server is shutting down")
        if len(self.pending) + len(rows) > self.max_queue:
            raise ResourceExhausted(f"model {self.name!r} has {len(self.pending)} texts waiting (limit "
                                    f"{self.max_queue}); retry later")
        loop, now = asyncio.get_running_loop(), time.perf_counter()
        futures = [loop.create_future() for _ in rows]
        self.pending.extend(zip(rows, futures, [now] * len(rows), strict=True))
        self.pending_tokens += sum(map(len, rows))
        self.m.queued.set(len(self.pending))
        self.arrived.set()
        self.n_open += 1
        try:
            return np.stack(await asyncio.gather(*futures))
        finally:
            self.n_open -= 1
            for f in futures:  # cancelled request: its texts are skipped when their batch forms
                f.cancel()

    async def _run(self) -> None:
        while not self.stopping:
            if not self.pending:
                self.arrived.clear()
                await self.arrived.wait()
                continue
            close_at = self.pending[0][2] + self.max_delay
            while (len(self.pending) < self.max_batch and self.pending_tokens < self.max_batch_tokens
                   and (left := close_at - time.perf_counter()) > 0):
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), left)
                except TimeoutError:
                    break
            batch = self._take()
            self.m.queued.set(len(self.pending))
            batch = [item for item in batch if not item[1].done()]
            if not batch:
                continue
            start = time.perf_counter()
            for _, _, t in batch:
                self.m.queue_wait.observe(start - t)
            self.m.batch.observe(len(batch))
            try:
                probs = await asyncio.get_running_loop().run_in_executor(
                    self.executor, self.runner.run, [rows for rows, _, _ in batch], self.max_batch_tokens)
            except Exception as err:  # fail this batch's requests (INTERNAL at the edge); keep batching
                for _, f, _ in batch:
                    if not f.done():
                        f.set_exception(err)
                continue
            self.m.call.observe(time.perf_counter() - start)
            for (_, f, _), p in zip(batch, probs, strict=True):
                if not f.done():
                    f.set_result(p)

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future, float]]:
        """The next batch: at most max_batch texts and max_batch_tokens tokens (at least one text)."""
        batch = [self.pending.popleft()]
        tokens = len(batch[0][0])
        while self.pending and len(batch) < self.max_batch and tokens + len(self.pending[0][0]) <= self.max_batch_tokens:
            tokens += len(self.pending[0][0])
            batch.append(self.pending.popleft())
        self.pending_tokens -= tokens
        return batch

    async def close(self) -> None:
        """Stop batching: texts still waiting fail with UNAVAILABLE."""
        self.stopping = True
        self.task.cancel()
        for _, f, _ in self.pending:
            if not f.done():
                f.set_exception(Unavailable("the server is shutting down"))
        self.executor.shutdown(wait=False)
