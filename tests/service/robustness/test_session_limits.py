"""ModelStreamInfer sessions are bounded: a client that never reads stops being read, an idle or over-long session
ends with DEADLINE_EXCEEDED naming its setting, and a session leaves nothing behind when its client goes."""

from __future__ import annotations

import asyncio
import gc
import threading
import types
from contextlib import aclosing

import grpc
import pytest

from service.api import session
from service.api import v2 as v2_api
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc
from tests.support.data import ROOT

MODEL = "tiny-lstm"


def generate(i: int, chars: int) -> v2.ModelInferRequest:
    """A valid v2 Generate: `chars` characters of text come back, in one reply (flush_chars covers them)."""
    return v2.ModelInferRequest(model_name=MODEL, id=str(i), inputs=[v2.ModelInferRequest.InferInputTensor(
        name="prompt", datatype="BYTES", shape=[1], contents=v2.InferTensorContents(bytes_contents=[b"ROMEO:"]))],
        parameters={"max_tokens": v2.InferParameter(int64_param=chars), "seed": v2.InferParameter(int64_param=i),
                    "flush_chars": v2.InferParameter(int64_param=min(chars, 4096))})


@pytest.fixture(scope="module")
def sessions(serve):
    return serve(session_max_requests=2, max_tokens_limit=4096, max_streams=8)


class Sent:
    """A request iterator that counts what grpc took from it, and can be told to stop."""

    def __init__(self, n: int, chars: int) -> None:
        self.n, self.chars, self.taken = n, chars, 0
        self.stop = threading.Event()

    def __iter__(self):
        for i in range(self.n):
            if self.stop.is_set():
                return
            self.taken += 1
            yield generate(i, self.chars)


def _reads(monkeypatch) -> list[str]:
    """Records the id of every request the server's sessions read."""
    seen, original = [], session.run_session

    async def counted(requests):
        async for r in requests:
            seen.append(r.id)
            yield r

    async def spying(requests, answer, max_pending):
        async with aclosing(original(counted(requests), answer, max_pending)) as replies:
            async for reply in replies:
                yield reply

    monkeypatch.setattr(v2_api, "run_session", spying)
    return seen


@pytest.mark.slow
def test_a_client_that_never_reads_stops_being_read(sessions, monkeypatch):
    seen = _reads(monkeypatch)
    sent = Sent(400, 4096)  # each reply carries 4 KB: the transport's buffers fill after a few dozen
    with grpc.insecure_channel(f"localhost:{sessions.port}", options=[("grpc.http2.bdp_probe", 0)]) as channel:
        call = v2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter(sent), timeout=120)
        # The server reads while replies can still be sent; then it stops, with session_max_requests waiting.
        assert sessions.wait_for(lambda: len(seen) > 4, 60)
        stalled = -1
        while len(seen) != stalled:  # read counts stop moving: every reading window has passed
            stalled = len(seen)
            sessions.wait_for(lambda before=stalled: len(seen) > before, 3)
        assert len(seen) < 200, f"the server read {len(seen)} of {sent.taken} requests from a client that reads nothing"
        call.cancel()
    sent.stop.set()
    scheduler = sessions.server.host.engine(sessions.server.host.repo.get(MODEL))
    assert sessions.wait_for(lambda: scheduler.n_open == 0, 30)  # its streams ended with it


def test_a_session_leaves_no_reference_cycle_behind(sessions):
    """The cancelled tasks of a session that ended must not wait for a full garbage collection to free their
    requests: the server collects rarely (service/__main__.py)."""
    gc.collect()
    gc.disable()
    try:
        with grpc.insecure_channel(f"localhost:{sessions.port}") as channel:
            call = v2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter(Sent(50, 4096)), timeout=120)
            next(call)
            call.cancel()
        scheduler = sessions.server.host.engine(sessions.server.host.repo.get(MODEL))
        assert sessions.wait_for(lambda: scheduler.n_open == 0, 30)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = [where for o in gc.garbage if (where := _code(o)) and where.startswith(SESSION_CODE)]
        assert not ours, ours
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


SESSION_CODE = tuple(str(ROOT / "service" / p) for p in ("api/session.py", "api/v2.py", "kinds/char_lm.py"))


def _code(o: object) -> str | None:
    """file:function of a frame, coroutine, async generator or task (what a session's garbage would be)."""
    if isinstance(o, asyncio.Task):
        o = o.get_coro()
    code = (o.f_code if isinstance(o, types.FrameType) else getattr(o, "cr_code", None) or getattr(o, "ag_code", None))
    return f"{code.co_filename}:{code.co_name}" if code is not None else None


@pytest.mark.parametrize(("settings", "needle"), [
    ({"session_idle_s": 0.5}, "session_idle_s = 0.5 s"),
    ({"session_max_s": 1.0}, "session_max_s = 1 s"),
])
def test_a_session_past_its_time_budget_ends_naming_the_setting(serve, settings, needle):
    running = serve(**settings)
    stop = threading.Event()

    def slow():  # a request every 0.2 s, each answered at once: never idle for 0.5 s while it sends
        i = 0
        while not stop.wait(0.2 if "session_max_s" in settings else 60):
            i += 1
            yield generate(i, 1)

    with grpc.insecure_channel(f"localhost:{running.port}") as channel:
        call = v2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(slow(), timeout=60)
        with pytest.raises(grpc.RpcError) as err:
            for _ in call:
                pass
        stop.set()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and needle in err.value.details()
