"""The HTTP front door against a real server on port 0: native JSON and server-sent events equal to gRPC's,
errors with their statuses, the token, the limits, a client that goes away, and the shared metrics."""

from __future__ import annotations

import itertools
import json
import socket
import threading

import grpc
import pytest

from tests.support.harness import generate, patched_run, pb, slowed
from tests.support.http_client import call, event_stream, get, post

SEEDED = {"model": "tiny-lstm", "prompt": "ROMEO:", "max_tokens": 60, "temperature": 0.9, "seed": 5}
LONG = {"model": "tiny-lstm", "prompt": "ROMEO:", "max_tokens": 5000, "flush_chars": 1}


def _active(server) -> float:
    return server.metric("rnnserve_active_streams", model="tiny-lstm", version="1")


def _count(server, method: str, code: str) -> float:
    return server.metric("rnnserve_requests_total", method=method, code=code, protocol="http")


def test_generate_equals_grpc_whole_and_streamed(server):
    text, _ = generate(server.stub, **SEEDED)
    status, _, reply = post(server.http, "/v1/generate", SEEDED)
    assert status == 200 and reply["text"] == text
    assert reply["finished"]["finish_reason"] == "FINISH_REASON_LENGTH"
    assert reply["finished"]["usage"]["generated_chars"] == 60 and reply["finished"]["version"] == 1

    # As the gRPC chunking test: steps of >= 2 ms, chunks by size only (flush_ms at its maximum).
    with patched_run(server, "tiny-lstm", slowed(0.002)):
        with event_stream(server.http, "/v1/generate", {**SEEDED, "stream": True, "flush_chars": 6,
                                                         "flush_ms": 10_000}) as (r, events):
            assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
            messages = [json.loads(data) for name, data in events]
    assert "".join(m["text"] for m in messages) == text
    assert all("finished" not in m for m in messages[:-1]) and messages[-1]["finished"]["finish_reason"]
    # One event per chunk, never split: the first character at once, then chunks of 6 (chunks merge only behind a
    # slow reader, so every event boundary falls 1 past a multiple of 6, and there are at most 1 + 60/6 + 1 events).
    boundaries = itertools.accumulate(len(m["text"]) for m in messages[:-1])
    assert len(messages) <= 12 and all(n % 6 == 1 for n in boundaries)


def test_logprobs_stops_and_camel_case_fields_as_the_proto_maps_them(server):
    fields = {**SEEDED, "stop": ["e", "a"], "logprobs": True}
    text, replies = generate(server.stub, **fields)
    status, _, reply = post(server.http, "/v1/generate", {**fields, "maxTokens": 60, "max_tokens": None})
    assert status == 200 and reply["text"] == text
    assert len(reply["logprobs"]) == len(text)
    assert reply["finished"]["finish_reason"] == pb.FinishReason.Name(replies[-1].finished.finish_reason)


def test_classify_trace_and_models_equal_grpc(server):
    texts = ["a gripping , funny and moving film", "dull"]
    native = server.stub.Classify(pb.ClassifyRequest(model="tiny-sentiment", texts=texts), timeout=30)
    status, _, reply = post(server.http, "/v1/classify", {"model": "tiny-sentiment", "texts": texts})
    assert status == 200 and [r["label"] for r in reply["results"]] == [r.label for r in native.results]
    assert reply["results"][0]["probabilities"] == pytest.approx(list(native.results[0].probabilities))

    fields = {"model": "tiny-lstm", "text": "KING:\nHo", "layers": [1], "units": [0, 3], "top_k": 2}
    steps = [s for m in server.stub.Trace(pb.TraceRequest(**fields), timeout=30) for s in m.steps]
    status, _, trace = post(server.http, "/v1/trace", fields)
    assert status == 200 and trace["header"]["n_chars"] == 8 and len(trace["steps"]) == 8
    assert [s["char"] for s in trace["steps"]] == list("KING:\nHo")
    assert trace["steps"][-1]["cell"] == pytest.approx(list(steps[-1].cell))
    with event_stream(server.http, "/v1/trace", {**fields, "stream": True}) as (_, events):
        assert "header" in json.loads(next(events)[1])

    status, _, models = get(server.http, "/v1/models")
    listed = {m["id"]: m for m in models["data"]}
    assert status == 200 and list(listed) == ["tiny-captioner", "tiny-gru", "tiny-lstm", "tiny-sentiment", "tiny-translator"]
    assert listed["tiny-sentiment"]["rnnserve"]["labels"] == ["negative", "positive"]
    status, _, one = get(server.http, "/v1/models/tiny-lstm?version=1")
    assert status == 200 and one["rnnserve"]["cell"] == "lstm" and one["rnnserve"]["sizes"]["n_layer"] == 2


ERRORS = {  # body -> (status, code, field named in the message)
    "bad value": ({**SEEDED, "temperature": -1}, 400, "INVALID_ARGUMENT", "temperature"),
    "unknown field": ({**SEEDED, "tempature": 1}, 400, "INVALID_ARGUMENT", "tempature"),
    "wrong type": ({**SEEDED, "max_tokens": "many"}, 400, "INVALID_ARGUMENT", "max_tokens"),
    "bool for int": ({**SEEDED, "top_k": True}, 400, "INVALID_ARGUMENT", "top_k"),
    "stream not bool": ({**SEEDED, "stream": "yes"}, 400, "INVALID_ARGUMENT", "stream"),
    "not an object": ([1, 2], 400, "INVALID_ARGUMENT", "request"),
    "unknown model": ({**SEEDED, "model": "nope"}, 404, "NOT_FOUND", None),
    "wrong kind": ({**SEEDED, "model": "tiny-sentiment"}, 409, "FAILED_PRECONDITION", None),
}


@pytest.mark.parametrize("case", ERRORS)
def test_errors_have_their_status_and_name_the_field(server, case):
    body, status, code, field = ERRORS[case]
    for stream in (False, True):
        sent = {**body, "stream": stream} if isinstance(body, dict) and "stream" not in body else body
        got, headers, reply = post(server.http, "/v1/generate", sent)
        assert got == status and headers["content-type"] == "application/json", reply
        assert reply["error"]["code"] == code and reply["error"]["param"] == field
        assert field is None or reply["error"]["message"].startswith(field)


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("POST", "/v1/generate", b'{"model": "tiny-lstm", "prompt":', 400),  # malformed JSON
    ("POST", "/v1/generate", b"\xff\xfe\x00", 400),  # not UTF-8
    ("POST", "/v1/generate", b"[" * 100_000, 400),  # nested past the parser's recursion limit
    ("POST", "/v2/models/tiny-lstm/infer", b"{", 400),
    ("GET", "/v1/nothing-here", None, 404),
    ("GET", "/v1/generate", None, 405),
    ("DELETE", "/v2/models/tiny-lstm", None, 405),
])
def test_bad_requests_get_a_json_error_never_a_traceback(server, method, path, body, status):
    got, headers, reply = call(server.http, method, path, body)
    assert got == status and headers["content-type"] == "application/json"
    text = json.dumps(reply)
    assert "Traceback" not in text and "File \"" not in text
    assert post(server.http, "/v1/generate", {**SEEDED, "max_tokens": 5})[0] == 200  # still serving


def test_a_body_over_the_limit_is_refused_with_413(serve):
    small = serve(max_receive_message_bytes=1000)
    status, headers, reply = post(small.http, "/v1/classify", {"model": "tiny-sentiment", "texts": ["x" * 2000]})
    assert status == 413 and "max_receive_message_bytes" in reply["error"]["message"]
    assert "retry-after" not in headers  # too large stays too large
    # Without a Content-Length (chunked), counted as it arrives.
    with socket.create_connection(("localhost", _port(small.http)), timeout=30) as s:
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + b"".join(b"%x\r\n%s\r\n" % (500, b"y" * 500) for _ in range(4)))
        assert s.recv(65536).startswith(b"HTTP/1.1 413 ")
    assert small.metric("rnnserve_requests_total", method="Classify", code="RESOURCE_EXHAUSTED", protocol="http") == 2


def test_over_capacity_is_429_with_retry_after(serve):
    small = serve(max_streams=1, max_queue=0)
    with patched_run(small, "tiny-lstm", slowed()):
        with event_stream(small.http, "/v1/generate", {**LONG, "stream": True}) as (_, events):
            next(events)
            status, headers, reply = post(small.http, "/v1/generate", {**LONG, "stream": True})
            assert status == 429 and headers["retry-after"] == "1" and reply["error"]["code"] == "RESOURCE_EXHAUSTED"
            status, headers, _ = post(small.http, "/v1/completions", {"model": "tiny-lstm", "prompt": "x"})
            assert status == 429 and headers["retry-after"] == "1"
        assert small.wait_for(lambda: _active(small) == 0)


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def test_a_client_that_goes_away_frees_its_slot(server):
    cancelled = _count(server, "Generate", "CANCELLED")
    with patched_run(server, "tiny-lstm", slowed()):
        with event_stream(server.http, "/v1/generate", {**LONG, "stream": True}) as (_, events):
            next(events)
            assert _active(server) == 1
        assert server.wait_for(lambda: _active(server) == 0)
        # Not streamed: the whole text would come at the end, but the client leaves before.
        body = json.dumps(LONG).encode()
        with socket.create_connection(("localhost", _port(server.http)), timeout=30) as s:
            s.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            assert server.wait_for(lambda: _active(server) == 1)
        assert server.wait_for(lambda: _active(server) == 0)
    assert server.wait_for(lambda: _count(server, "Generate", "CANCELLED") == cancelled + 2)


def test_a_budget_that_runs_out_is_504(serve):
    small = serve(max_request_s=0.3)
    with patched_run(small, "tiny-lstm", slowed()):
        status, _, reply = post(small.http, "/v1/generate", LONG)
        assert status == 504 and reply["error"]["code"] == "DEADLINE_EXCEEDED"
        with event_stream(small.http, "/v1/generate", {**LONG, "stream": True}) as (r, events):
            name, data = list(events)[-1]
        assert r.status == 200 and name == "error" and json.loads(data)["error"]["code"] == "DEADLINE_EXCEEDED"
    assert small.wait_for(lambda: _active(small) == 0)


def test_requests_are_counted_with_the_protocol_and_share_the_latency_histogram(server):
    ok, latency = _count(server, "Generate", "OK"), server.metric("rnnserve_request_duration_seconds_count",
                                                                   method="Generate")
    grpc_ok = server.metric("rnnserve_requests_total", method="Generate", code="OK", protocol="grpc")
    assert post(server.http, "/v1/generate", {**SEEDED, "max_tokens": 3})[0] == 200
    generate(server.stub, **{**SEEDED, "max_tokens": 3})
    assert _count(server, "Generate", "OK") == ok + 1
    assert server.metric("rnnserve_requests_total", method="Generate", code="OK", protocol="grpc") == grpc_ok + 1
    assert server.metric("rnnserve_request_duration_seconds_count", method="Generate") == latency + 2
    unknown = _count(server, "unknown", "NOT_FOUND")
    get(server.http, "/no/such/route/" + "x" * 50)
    assert _count(server, "unknown", "NOT_FOUND") == unknown + 1


def test_token_guards_all_but_health_and_the_playground(serve, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret-token-0123456789\n")
    guarded = serve(auth_token_file=str(tokens))
    assert get(guarded.http, "/v2/health/ready")[0] == 200
    assert get(guarded.http, "/")[0] == 200  # the page itself; its API calls carry the token
    for headers in ({}, {"authorization": "Bearer wrong-token-0123456789"}, {"authorization": "Basic abc"}):
        status, found, reply = post(guarded.http, "/v1/generate", SEEDED, headers=headers)
        assert status == 401 and found["www-authenticate"] == "Bearer" and reply["error"]["code"] == "UNAUTHENTICATED"
    assert get(guarded.http, "/v2/models/tiny-lstm")[0] == 401
    status, _, reply = post(guarded.http, "/v1/generate", SEEDED, headers={"authorization": "Bearer s3cret-token-0123456789"})
    assert status == 200 and len(reply["text"]) == 60
    assert guarded.metric("rnnserve_requests_total", method="Generate", code="UNAUTHENTICATED", protocol="http") == 3


def test_cors_answers_only_the_configured_origins(server, serve):
    origin = {"origin": "http://localhost:3000"}
    assert "access-control-allow-origin" not in get(server.http, "/v1/models", headers=origin)[1]  # none by default
    open_to = serve(http_cors_origins="http://localhost:3000")
    status, headers, _ = call(open_to.http, "OPTIONS", "/v1/generate", headers={
        **origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type"})
    assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "access-control-allow-origin" not in get(open_to.http, "/v1/models", headers={"origin": "http://evil.example"})[1]


def test_draining_answers_503_and_the_stream_in_flight_finishes(serve):
    draining = serve()
    with patched_run(draining, "tiny-lstm", slowed()):
        with event_stream(draining.http, "/v1/generate", {**SEEDED, "max_tokens": 300, "flush_chars": 1,
                                                          "stream": True}) as (_, events):
            next(events)
            stopper = threading.Thread(target=draining.call, args=(draining.server.shutdown(30),), kwargs={"timeout": 60})
            stopper.start()
            assert draining.wait_for(lambda: draining.server.host.draining)
            status, _, reply = post(draining.http, "/v1/generate", SEEDED)
            assert status == 503 and reply["error"]["code"] == "UNAVAILABLE"
            assert get(draining.http, "/v2/health/ready")[0] == 503
            rest = [json.loads(data) for _, data in events]
        stopper.join(60)
    assert rest[-1]["finished"]["usage"]["generated_chars"] == 300
    with pytest.raises(grpc.RpcError):
        generate(draining.stub, **SEEDED)
