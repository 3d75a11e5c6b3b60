"""ModelStreamInfer sessions are bounded: a client that never reads stops being read, an idle or over-long session
ends with DEADLINE_EXCEEDED naming its setting, and a session leaves nothing behind when its client goes."""

from __future__ import annotations

import asyncio
import gc
import select
import socket
import struct
import threading
import tracemalloc
import types
from contextlib import aclosing

import grpc
import h2.config
import h2.connection
import pytest

from bench.rapid_reset import grpc_frame
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

    async def spying(requests, answer, limits):
        async with aclosing(original(counted(requests), answer, limits)) as replies:
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


class Blob:
    """A message of n bytes, as run_session sizes one."""

    def __init__(self, n: int) -> None:
        self.n = n

    def ByteSize(self) -> int:  # noqa: N802
        return self.n


def _never_read(limits: session.Limits, request_bytes: int, reply_bytes: int) -> tuple[int, int]:
    """(requests read, replies made) once a session whose client took one reply and then none settles. Every
    request streams replies without end, so none finishes: what was read is what the session holds."""
    read = made = 0

    async def requests():
        nonlocal read
        while True:
            read += 1
            yield Blob(request_bytes)

    async def answer(request):
        nonlocal made
        while True:
            made += 1
            yield Blob(reply_bytes)

    async def main():
        async with aclosing(session.run_session(requests(), answer, limits)) as replies:
            await anext(replies)  # the sender's first reply; it never asks for another (its client reads nothing)
            for _ in range(10_000):  # everything that can still run, runs: no timer is involved
                await asyncio.sleep(0)

    asyncio.run(main())
    return read, made


MiB = 1 << 20


@pytest.mark.parametrize(("limits", "request_bytes", "most_read"), [
    (session.Limits(max_requests=100, max_bytes=8 * MiB, max_message_bytes=4 * MiB), 4 * MiB, 2),
    (session.Limits(max_requests=100, max_bytes=8 * MiB, max_message_bytes=4 * MiB), 1 * MiB, 5),  # 4 + 4 more fit
    (session.Limits(max_requests=100, max_bytes=8 * MiB, max_message_bytes=1 * MiB), 1 * MiB, 8),
    (session.Limits(max_requests=4, max_bytes=8 * MiB, max_message_bytes=4 * MiB), 100, 4),  # small: the count
    (session.Limits(max_requests=4, max_bytes=1 * MiB, max_message_bytes=4 * MiB), 100, 1),  # one at a time
])
def test_a_session_that_is_never_read_holds_its_byte_budget_of_requests_and_of_replies(limits, request_bytes,
                                                                                          most_read):
    reply_bytes = 200 << 10  # the queue's bytes bind before its count
    read, made = _never_read(limits, request_bytes, reply_bytes)
    assert read == most_read
    assert read * request_bytes <= max(limits.max_bytes, limits.max_message_bytes)
    # Replies: one taken by the sender, each request's task holds the one it waits to queue, the queue the rest.
    assert made - 1 - read <= min(session.REPLY_QUEUE, session.REPLY_BYTES // reply_bytes)


def test_a_reply_over_the_queues_budget_goes_out_alone_and_the_session_ends():
    async def requests():
        for n in range(3):
            yield Blob(n)

    async def answer(request):
        yield Blob(2 * session.REPLY_BYTES)
        yield Blob(request.n)

    async def main():
        limits = session.Limits(max_requests=2, max_bytes=8 * MiB, max_message_bytes=4 * MiB)
        return [r.n async for r in session.run_session(requests(), answer, limits)]

    got = asyncio.run(main())
    assert sorted(got) == [0, 1, 2, *[2 * session.REPLY_BYTES] * 3]


def test_a_failed_request_waiting_to_be_sent_holds_no_copy_of_its_texts(sessions):
    """A session's error reply waits for the client like any other. Sent from inside the except block, it held
    the error's traceback, and so the frames that parsed the request: its 1 MiB text as a str and as a
    ClassifyRequest, on top of the request itself, for every request of a client that does not read."""
    servicer = v2_api.GRPCInferenceServicer(sessions.server.host)
    text = b"x" * (1 << 20)  # over max_prompt_chars: INVALID_ARGUMENT
    request = v2.ModelInferRequest(model_name="tiny-sentiment", inputs=[v2.ModelInferRequest.InferInputTensor(
        name="text", datatype="BYTES", shape=[1], contents=v2.InferTensorContents(bytes_contents=[text]))])
    del text

    async def first_reply_held():
        replies = servicer._stream_one(request)
        tracemalloc.start()
        try:
            reply = await anext(replies)  # suspended here, as while its client reads nothing
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
            await replies.aclose()
        return reply, held

    reply, held = sessions.call(first_reply_held())
    assert "texts[0]" in reply.error_message
    assert held < 100_000, f"{held / 1e6:.1f} MB held by a failed request's reply"


def test_a_session_that_is_not_read_gets_a_small_receive_window(serve):
    """Raw HTTP/2: a ModelStreamInfer session stops reading once its one request in progress cannot send its
    replies (this client grants no window for them); what the client can still send is what grpc buffers for the
    session beyond its byte budget. With grpc's BDP probing that was at least 4 MiB a stream; now 64 KiB."""
    running = serve(session_max_requests=1, max_tokens_limit=100_000, max_streams=8)
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "localhost"),
                                (":path", "/inference.GRPCInferenceService/ModelStreamInfer"),
                                ("content-type", "application/grpc"), ("te", "trailers")])
        conn.send_data(sid, grpc_frame(generate(0, 100_000).SerializeToString()))  # ~100 KB of replies: never taken
        sent = 0
        pending = struct.pack(">?I", False, 4 << 20)  # then a 4 MiB request, as fast as the server lets it in
        while sent < (2 << 20):
            room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if room > 0:
                chunk = pending or b"x" * room
                conn.send_data(sid, chunk[:room])
                pending, sent = chunk[room:] if pending else b"", sent + min(room, len(chunk))
            sock.sendall(conn.data_to_send())
            if room == 0 and not select.select([sock], [], [], 3)[0]:
                break  # no window for 3 s: the server takes no more
            if room == 0 or select.select([sock], [], [], 0)[0]:
                conn.receive_data(sock.recv(1 << 16))  # SETTINGS, PING and WINDOW_UPDATE; replies are not granted
                sock.sendall(conn.data_to_send())
    assert sent <= 128 << 10, f"the server let {sent} bytes in for a session it does not read"
