"""Injected faults: clients that vanish or stop reading, storms of tiny deadlines and cancels.

Each fault must free its slots within one decode step and leave every other stream's text exactly
as it would be alone. How long the freeing takes, in steps and milliseconds, is measured and
printed (run with -s to see it); only the step count is asserted, since it does not depend on load.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import SimpleNamespace

import grpc
import pytest

from service.engine.scheduler import Scheduler
from tests.support.data import ROOT
from tests.support.harness import Running, generate, patched_run, pb, slowed

MODEL = "tiny-lstm"
LONG = {"model": MODEL, "prompt": "ROMEO:", "max_tokens": 1_000_000, "flush_chars": 1}  # never ends by itself


def seeded(seed: int, max_tokens: int) -> dict:
    return {"model": MODEL, "prompt": "ROMEO:", "max_tokens": max_tokens, "seed": seed, "temperature": 1.0,
            "flush_chars": 7}


# A client in its own process: opens n streams, reads the first message of each, says so, then idles
# (the test kills it, or stops it so that its connection is never read again). Without BDP probing
# its HTTP/2 windows stay at the 64 KiB default, and with log-probabilities a character takes ~5
# bytes, so a stopped client holds back the server's writes after seconds rather than minutes.
CLIENT = """
import sys, time, grpc
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb, rnnserve_pb2_grpc as pb_grpc
port, n, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
channel = grpc.insecure_channel(f"localhost:{port}", options=[("grpc.http2.bdp_probe", 0)])
stub = pb_grpc.InferenceStub(channel)
calls = [stub.Generate(pb.GenerateRequest(model="tiny-lstm", prompt="ROMEO:", max_tokens=1000000, flush_chars=1,
                                           logprobs=True),
                       timeout=timeout) for _ in range(n)]
for call in calls:
    next(call)
print("streaming", flush=True)
time.sleep(3600)
"""


@contextmanager
def client(port: int, n: int, timeout: float = 600) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, str(port), str(n), str(timeout)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "streaming"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


@pytest.fixture(scope="module")
def faulty(serve) -> Running:
    return serve(max_streams=16, max_queue=128, max_tokens_limit=1_000_000)


def _scheduler(running: Running) -> Scheduler:
    host = running.server.host
    return host.engine(host.repo.get(MODEL, 1))


def _active(running: Running) -> float:
    return running.metric("rnnserve_active_streams", model=MODEL, version="1")


def _queued(running: Running) -> float:
    return running.metric("rnnserve_queued_requests", model=MODEL, version="1", method="Generate")


class Freed:
    """When the server learned that a stream was gone (Scheduler.cancel) and when its slot was released.

    Times are perf_counter seconds, steps the scheduler's next-step number at that moment; a stream
    counts as freed by a fault when its release came after its cancel (a finished one is released first).
    The streams themselves are the keys: they stay alive, so a stream cancelled while queued and then
    collected cannot lend its id() to a later one and pair that one's release with its own old cancel.
    """

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.cancelled: dict[object, tuple[float, int]] = {}
        self.released: dict[object, tuple[float, int]] = {}

    def saw_cancel(self, stream: object) -> None:
        self.cancelled.setdefault(stream, (time.perf_counter(), self.sched.step))

    def saw_release(self, stream: object) -> None:
        self.released[stream] = (time.perf_counter(), self.sched.step)

    def steps_and_ms(self, since: float | None = None) -> list[tuple[int, float, float]]:
        """(steps, ms from cancel, ms from `since`) of each stream freed by a fault, from its cancel to its release."""
        out = []
        for stream, (t_c, step_c) in self.cancelled.items():
            if stream in self.released and self.released[stream][0] >= t_c:
                t_r, step_r = self.released[stream]
                out.append((step_r - step_c, (t_r - t_c) * 1e3, (t_r - since) * 1e3 if since else float("nan")))
        return out


@contextmanager
def watched(running: Running) -> Iterator[Freed]:
    sched = _scheduler(running)
    freed = Freed(sched)
    cancel, release = sched.cancel, sched._release

    def on_cancel(stream):
        freed.saw_cancel(stream)
        cancel(stream)

    def on_release(stream):
        freed.saw_release(stream)
        release(stream)

    sched.cancel, sched._release = on_cancel, on_release
    try:
        yield freed
    finally:
        del sched.cancel, sched._release


def test_freed_pairs_a_release_only_with_the_same_streams_cancel():
    """A stream cancelled while queued is never released; a later stream at its old address must not inherit its cancel."""
    class Standin:  # a stream, for Freed: an object hashed by identity
        pass

    sched = SimpleNamespace(step=0)
    freed = Freed(sched)
    queued = Standin()
    address = id(queued)
    freed.saw_cancel(queued)
    del queued
    # CPython gives a freed object's memory to the next one of its size, unless Freed still holds it.
    later = next((s for s in (Standin() for _ in range(10_000)) if id(s) == address), Standin())
    sched.step = 3
    freed.saw_cancel(later)
    sched.step = 4
    freed.saw_release(later)
    assert [steps for steps, _, _ in freed.steps_and_ms()] == [1]


def report(what: str, measured: list[tuple[int, float, float]]) -> None:
    steps, ms, total = zip(*measured, strict=True)
    line = (f"{what}: {len(measured)} slots freed; steps from the server's cancel to the release: max {max(steps)}, "
            f"mean {statistics.fmean(steps):.2f}; ms from cancel: median {statistics.median(ms):.2f}, max {max(ms):.2f}")
    if all(t == t for t in total):
        line += f"; ms from the client's fault: median {statistics.median(total):.2f}, max {max(total):.2f}"
    print(f"\n[faults] {line}")


def _assert_within_one_step(measured: list[tuple[int, float, float]]) -> None:
    # The decode loop takes cancellations at the top of every iteration: a cancel that lands while
    # step k runs is seen before step k+1, so a slot is never held for more than one further step.
    assert measured and max(steps for steps, _, _ in measured) <= 1, measured


@pytest.mark.process
@pytest.mark.slow
def test_a_client_killed_mid_stream_frees_its_slots_and_others_are_unaffected(faulty):
    sched = _scheduler(faulty)
    active, queued = _active(faulty), _queued(faulty)
    other = seeded(3, 4000)
    alone = generate(faulty.stub, **other)[0]
    with patched_run(faulty, MODEL, slowed()), watched(faulty) as freed:
        with client(faulty.port, 4) as vanishing:
            call = faulty.stub.Generate(pb.GenerateRequest(**other), timeout=300)
            first = next(call)
            assert faulty.wait_for(lambda: _active(faulty) == active + 5)
            t_kill = time.perf_counter()
            vanishing.send_signal(signal.SIGKILL)  # no goodbye: the kernel just closes its sockets
            vanishing.wait(30)
            # The other stream (≥ 8 s at ≥ 2 ms a step) still runs while the 4 slots come back.
            assert faulty.wait_for(lambda: _active(faulty) == active + 1, timeout=60)
            assert not call.done()
            text = first.text + "".join(r.text for r in call)
        measured = freed.steps_and_ms(since=t_kill)
    assert call.code() == grpc.StatusCode.OK and text == alone
    assert len(measured) == 4
    _assert_within_one_step(measured)
    report("SIGKILLed client, 4 streams", measured)
    assert faulty.wait_for(lambda: _active(faulty) == active) and _queued(faulty) == queued
    assert sched.n_open == 0 and len(sched.free) == sched.max_streams

    # Every slot can be taken again at once: max_streams new streams all run, none waits.
    with patched_run(faulty, MODEL, slowed()):
        calls = [faulty.stub.Generate(pb.GenerateRequest(**LONG), timeout=120) for _ in range(sched.max_streams)]
        for c in calls:
            next(c)
        assert _active(faulty) == active + sched.max_streams and _queued(faulty) == queued
        for c in calls:
            c.cancel()
    assert faulty.wait_for(lambda: _active(faulty) == active)


@pytest.mark.process
@pytest.mark.slow
def test_a_client_that_stops_reading_blocks_no_one_and_ends_at_its_deadline(faulty):
    sched = _scheduler(faulty)
    active = _active(faulty)
    deadline_exceeded = faulty.metric("rnnserve_requests_total", method="Generate", code="DEADLINE_EXCEEDED")
    internal = faulty.metric("rnnserve_requests_total", method="Generate", code="INTERNAL")
    other = seeded(5, 3000)
    alone = generate(faulty.stub, **other)[0]
    with watched(faulty) as freed, client(faulty.port, 1, timeout=20) as stalled:
        stalled.send_signal(signal.SIGSTOP)  # its socket is never read again: the TCP window closes
        stream = next(s for s in list(sched.batch.streams) if s.params.max_tokens == LONG["max_tokens"])
        # Text piles up on the server side: gRPC flow control holds back the writes, and the handler
        # waits on them, while the decode thread keeps producing the stream's characters.
        assert faulty.wait_for(lambda: stream.unsent_chars > 200, timeout=60), stream.unsent_chars
        assert generate(faulty.stub, **other)[0] == alone  # decoded beside the stalled stream, unaffected
        assert _active(faulty) == active + 1  # the stalled stream still holds its slot...
        # ...until its 20 s deadline passes: the server ends it although the client never reads again.
        assert faulty.wait_for(lambda: _active(faulty) == active, timeout=120)
        # Its pending write fails when the deadline ends the call: that is the deadline, not an internal error.
        assert faulty.wait_for(lambda: faulty.metric("rnnserve_requests_total", method="Generate",
                                                     code="DEADLINE_EXCEEDED") == deadline_exceeded + 1)
        assert faulty.metric("rnnserve_requests_total", method="Generate", code="INTERNAL") == internal
        assert stalled.poll() is None  # still stopped: nothing came from the client's side
        measured = freed.steps_and_ms()
    assert len(measured) == 1
    _assert_within_one_step(measured)
    report("stalled client reaching its deadline", measured)
    assert sched.n_open == 0


@pytest.mark.process
@pytest.mark.slow
def test_a_client_whose_host_vanished_is_dropped_by_keepalive(serve):
    """No FIN, no RST, no deadline: only the server's unanswered HTTP/2 ping can tell such a client is gone."""
    pinging = serve(max_streams=4, max_tokens_limit=1_000_000, keepalive_s=1.0)
    sched = _scheduler(pinging)
    active = _active(pinging)
    with watched(pinging) as freed, client(pinging.port, 2) as vanished:
        vanished.send_signal(signal.SIGSTOP)  # from the server's side, a host that is gone: nothing answers
        t_gone = time.perf_counter()
        assert _active(pinging) == active + 2
        assert pinging.wait_for(lambda: _active(pinging) == active, timeout=120)  # within ~2 keepalive periods
        assert vanished.poll() is None
        measured = freed.steps_and_ms(since=t_gone)
    assert len(measured) == 2 and sched.n_open == 0
    _assert_within_one_step(measured)
    report("vanished host (stopped client, no deadline) dropped by 1 s keepalive", measured)


def _run(call: grpc.Call, cancel_after: int = 0) -> tuple[str, grpc.StatusCode]:
    """Read a stream to its end (or cancel it after that many messages): its text and status code."""
    text = []
    try:
        for reply in call:
            text.append(reply.text)
            if len(text) == cancel_after:
                call.cancel()
                break
    except grpc.RpcError as err:
        return "".join(text), err.code()
    return "".join(text), call.code()


@pytest.mark.slow
def test_tiny_deadlines_and_cancels_at_once_free_every_slot_and_leave_others_unaffected(faulty):
    sched = _scheduler(faulty)
    active, queued = _active(faulty), _queued(faulty)
    others = [seeded(100 + i, 1500) for i in range(4)]
    alone = [generate(faulty.stub, **o)[0] for o in others]
    deadlines = [0.001 + 0.049 * i / 59 for i in range(60)]  # 1 ms .. 50 ms
    cancels = [1 + i % 3 for i in range(12)]  # after 1, 2 or 3 messages
    with patched_run(faulty, MODEL, slowed()), watched(faulty) as freed, ThreadPoolExecutor(80) as pool:
        running = [faulty.stub.Generate(pb.GenerateRequest(**o), timeout=300) for o in others]
        assert faulty.wait_for(lambda: _active(faulty) == active + len(others))
        storm = ([pool.submit(_run, faulty.stub.Generate(pb.GenerateRequest(**LONG), timeout=d)) for d in deadlines]
                 + [pool.submit(_run, faulty.stub.Generate(pb.GenerateRequest(**LONG), timeout=120), n) for n in cancels])
        results = [pool.submit(_run, call) for call in running]
        ended = [f.result(timeout=300)[1] for f in storm]
        texts = [f.result(timeout=300) for f in results]
        assert faulty.wait_for(lambda: _active(faulty) == active and _queued(faulty) == queued, timeout=60)
        measured = freed.steps_and_ms()
    assert texts == [(t, grpc.StatusCode.OK) for t in alone]
    assert ended == [grpc.StatusCode.DEADLINE_EXCEEDED] * len(deadlines) + [grpc.StatusCode.CANCELLED] * len(cancels)
    assert sched.n_open == 0 and len(sched.free) == sched.max_streams
    assert len(measured) >= len(cancels)  # every cancelled stream held a slot; some deadlines ran out while queued
    _assert_within_one_step(measured)
    report(f"{len(deadlines)} deadlines of 1-50 ms + {len(cancels)} cancels", measured)
    assert len(generate(faulty.stub, **{**LONG, "max_tokens": 20})[0]) == 20  # and the slots serve again
