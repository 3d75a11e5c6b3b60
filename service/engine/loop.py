"""One decode thread per model version, and what every continuously batched engine does around it.

Requests arrive on the event loop (submit) and wait in an inbox. Each iteration of the decode thread
takes them and the cancellations, admits waiting streams into free slots (a stream may need several
rows of the batch: a beam search does), and then does the engine's own work: one batched step for
every admitted stream. Streams join at the next step and leave the step they finish or are cancelled.
Chunks go back through an outbox that the event loop polls every deliver_ms while streams are open:
waking the loop from this thread would release the GIL in the middle of a step and hand it to the loop
for its whole burst. A stream's first text is the exception: it wakes the loop at once (one wake per
step at most, whatever the number of streams that start in it), so time to first text does not wait
for the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from service.engine.stream import Chunk, StreamBase
from service.errors import ResourceExhausted, Unavailable
from service.settings import Settings

log = logging.getLogger("rnnserve")

S = TypeVar("S", bound=StreamBase)


class Counted(Protocol):
    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...


class Observed(Protocol):
    def observe(self, amount: float) -> None: ...


class AdmissionMetrics(Protocol):
    """The children of the Prometheus metrics that admission moves (service/metrics.py binds them per model)."""

    @property
    def queued(self) -> Counted:
        """Streams waiting for a slot."""
        ...

    @property
    def active(self) -> Counted:
        """Streams holding a slot."""
        ...

    @property
    def queue_wait(self) -> Observed:
        """Seconds from arrival to a slot."""
        ...


class DecodeLoop(ABC, Generic[S]):
    """Admission, cancellation and delivery; the engine's work goes in _admit, _work, _drop, _holding and _reset.

    The thread (start) calls run_once, one iteration of the decode loop, and the event loop calls
    deliver, which hands the streams what it produced; a test can call both itself, step by step.
    """

    def __init__(self, name: str, version: int, settings: Settings, loop: asyncio.AbstractEventLoop,
                 metrics: AdmissionMetrics) -> None:
        self.name, self.version, self.loop, self.admission = name, version, loop, metrics
        self.max_streams, self.max_queue = settings.max_streams, settings.max_queue
        self.deliver_s = settings.deliver_ms / 1000
        self.free = list(range(self.max_streams - 1, -1, -1))  # slots: each stream's index into per-slot buffers
        self.free_rows = self.max_streams  # rows of the batch not held by any stream
        self.waiting: list[S] = []  # taken from the inbox, waiting for a slot
        # Shared with the event loop, under the lock.
        self.lock = threading.Lock()
        self.inbox: list[S] = []
        self.cancels: list[S] = []
        self.outbox: list[tuple[S, Chunk[Any] | Exception]] = []
        self.polling = False  # event-loop side: a deliver is scheduled
        self.waking = False  # under the lock: a hand-over is scheduled on the loop for first text
        self.wake = threading.Event()
        self.stopping = False
        self.n_open = 0  # event-loop side: submitted and not yet closed
        self.thread = threading.Thread(target=self._run, name=f"decode-{name}-{version}", daemon=True)

    def start(self) -> None:
        """Start decoding on the model's own thread."""
        self.thread.start()

    # ---- event-loop side
    def _enqueue(self, streams: list[S]) -> None:
        """Hand new streams to the decode thread, or refuse them all: UNAVAILABLE when stopping, RESOURCE_EXHAUSTED when full."""
        if self.stopping:
            raise Unavailable("the server is shutting down")
        if self.n_open + len(streams) > self.max_streams + self.max_queue:
            more = f" (this request needs {len(streams)})" if len(streams) > 1 else ""
            raise ResourceExhausted(f"model {self.name!r} has {self.max_streams} streams running and "
                                    f"{self.max_queue} waiting (the limits){more}; retry later")
        self.n_open += len(streams)
        self.admission.queued.inc(len(streams))
        with self.lock:
            self.inbox.extend(streams)
        self.wake.set()
        if not self.polling:
            self.polling = True
            self.loop.call_later(self.deliver_s, self.deliver)

    def cancel(self, stream: S) -> None:
        """The client went away or its deadline passed: free the slot at the next step."""
        if stream.closed:
            return
        stream.closed = True
        self.n_open -= 1
        with self.lock:
            self.cancels.append(stream)
        self.wake.set()

    def deliver(self) -> None:
        """Hand the outbox to the streams; poll again while any stream is open."""
        self._hand_over()
        if self.n_open or self.outbox:
            self.loop.call_later(self.deliver_s, self.deliver)
        else:
            self.polling = False

    def _deliver_first(self) -> None:
        """The decode thread posted a stream's first text: hand it over now, between polls."""
        with self.lock:
            self.waking = False
        self._hand_over()

    def _hand_over(self) -> None:
        with self.lock:
            events, self.outbox = self.outbox, []
        for stream, item in events:
            if stream.closed:
                continue
            stream.put(item)
            if isinstance(item, Exception) or item.finished is not None:
                stream.closed = True
                self.n_open -= 1

    async def close(self) -> None:
        """Stop the decode thread; it fails the streams it still holds with UNAVAILABLE."""
        self.stopping = True
        self.wake.set()
        await asyncio.to_thread(self.thread.join, 5)

    # ---- decode thread
    def _post(self, events: Sequence[tuple[S, Chunk[Any] | Exception]], first: bool = False) -> None:
        """Queue chunks for the event loop; `first`: some are a stream's first text, which wakes the loop now."""
        with self.lock:
            self.outbox.extend(events)
            wake = first and not self.waking
            self.waking = self.waking or first
        if wake:
            self.loop.call_soon_threadsafe(self._deliver_first)

    @property
    def idle(self) -> bool:
        """Nothing to decode and nothing to admit until a request or a cancel arrives."""
        return not (self._busy() or (self.waiting and self._fits(self.waiting[0])))

    def run_once(self) -> None:
        """One iteration of the decode loop: take new and cancelled streams, admit, then the engine's work."""
        self._mail()
        self._work()

    def _run(self) -> None:
        while not self.stopping:
            try:
                if self.idle:
                    self.wake.wait()
                self.wake.clear()
                self.run_once()
            except Exception as err:  # a bug or a runtime failure: fail the streams in flight, keep serving
                log.exception("decode loop of %s version %s failed", self.name, self.version)
                self._fail_all(err)
        self._fail_all(Unavailable("the server is shutting down"), waiting=True)

    def _mail(self) -> None:
        """Take new and cancelled streams from the event loop; admit waiting streams, in order, while they fit."""
        with self.lock:
            inbox, self.inbox = self.inbox, []
            cancels, self.cancels = self.cancels, []
        self.waiting.extend(inbox)
        if cancels:
            gone = set(map(id, cancels))
            n_waiting = len(self.waiting)
            self.waiting = [s for s in self.waiting if id(s) not in gone]
            self.admission.queued.dec(n_waiting - len(self.waiting))
            self._drop(gone)
        admitted = []
        while self.waiting and self._fits(self.waiting[0]):
            s = self.waiting.pop(0)
            s.slot, s.admitted = self.free.pop(), time.perf_counter()
            self.free_rows -= s.rows
            self.admission.queued.dec()
            self.admission.active.inc()
            self.admission.queue_wait.observe(s.admitted - s.arrival)
            admitted.append(s)
        if admitted:
            self._admit(admitted)

    def _fits(self, s: S) -> bool:
        return bool(self.free) and self.free_rows >= s.rows

    def _release(self, s: S) -> None:
        """Give a stream's slot and rows back (it finished, failed or was cancelled)."""
        self.free.append(s.slot)
        self.free_rows += s.rows
        s.slot = -1
        self.admission.active.dec()

    def _fail_all(self, err: Exception, waiting: bool = False) -> None:
        """Fail every stream holding a slot (and, at shutdown, every waiting one); start again from an empty batch."""
        streams = self._holding()
        for s in streams:
            self._release(s)
        if waiting:
            with self.lock:
                streams += self.waiting + self.inbox
                self.admission.queued.dec(len(self.waiting) + len(self.inbox))
                self.waiting, self.inbox = [], []
        self._reset()
        if streams:
            self._post([(s, err) for s in streams])

    @abstractmethod
    def _busy(self) -> bool:
        """Is there work for the next iteration without new streams (a batch to step, sources to read)?"""

    @abstractmethod
    def _admit(self, streams: list[S]) -> None:
        """Streams that just got a slot (and their rows): prepare them to join the batch."""

    @abstractmethod
    def _work(self) -> None:
        """One iteration: read what joiners need read, step the batch, post what is due."""

    @abstractmethod
    def _drop(self, gone: set[int]) -> None:
        """Forget the admitted streams whose id() is in `gone` (cancelled), releasing each."""

    @abstractmethod
    def _holding(self) -> list[S]:
        """Every stream that holds a slot."""

    @abstractmethod
    def _reset(self) -> None:
        """Back to an empty batch (after _fail_all released every stream)."""
