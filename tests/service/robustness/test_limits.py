"""Limits that protect the process: message sizes, concurrent RPCs, the per-request time budget; each its status code."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from service.api.v2_params import FINAL, pack_bytes
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc
from service.settings import Settings
from tests.support.harness import patched_run, pb, slowed

BUDGET_MESSAGE = "the server's time budget for a request ran out: max_request_s = 1.5 s"


def _error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def _classify(stub, texts: list[str], **kw) -> pb.ClassifyResponse:
    return stub.Classify(pb.ClassifyRequest(model="tiny-sentiment", texts=texts), timeout=60, **kw)


def test_defaults_are_sensible():
    s = Settings()
    assert s.max_receive_message_bytes >= 64 * s.max_prompt_chars * 4  # a full Classify of 4-byte characters fits
    assert s.max_concurrent_rpcs > 2 * (s.max_streams + s.max_queue)  # the engines say RESOURCE_EXHAUSTED first
    assert s.max_request_s >= 600


@pytest.mark.parametrize("name", ["max_receive_message_bytes", "max_send_message_bytes", "max_concurrent_rpcs",
                                  "max_request_s"])
def test_limits_must_be_positive(name):
    with pytest.raises(ValueError, match=f"setting {name} must be positive"):
        Settings(**{name: 0})


def test_an_oversized_request_is_resource_exhausted_and_the_server_goes_on(serve):
    s = serve(max_receive_message_bytes=64 * 1024, max_prompt_chars=100_000, classify_max_batch_tokens=100_000,
              max_classify_tokens=100_000)
    err = _error(lambda: _classify(s.stub, ["word " * 20_000]))  # 100 kB
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in err.details()
    assert len(_classify(s.stub, ["word " * 10_000]).results) == 1  # 50 kB: under the limit


def test_an_oversized_reply_is_resource_exhausted(serve):
    s = serve(max_send_message_bytes=1024)
    small = pb.GenerateRequest(model="tiny-lstm", prompt="A", max_tokens=100, seed=1, flush_chars=10)
    assert len("".join(r.text for r in s.stub.Generate(small, timeout=60))) == 100
    big = pb.GenerateRequest(model="tiny-lstm", prompt="A", max_tokens=2000, seed=1, flush_chars=2000, flush_ms=10_000,
                             logprobs=True)  # one message of 2,000 characters and their log-probabilities
    count = lambda code: s.metric("rnnserve_requests_total", method="Generate", code=code)  # noqa: E731
    exhausted, internal = count("RESOURCE_EXHAUSTED"), count("INTERNAL")
    err = _error(lambda: list(s.stub.Generate(big, timeout=60)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in err.details(), err
    assert s.wait_for(lambda: s.server.open_requests() == 0)
    # counted as what the client saw, not as an internal error of the server
    assert s.wait_for(lambda: count("RESOURCE_EXHAUSTED") == exhausted + 1)
    assert count("INTERNAL") == internal


def test_rpcs_beyond_the_concurrency_limit_are_resource_exhausted_at_once(serve):
    s = serve(max_concurrent_rpcs=2)
    request = pb.GenerateRequest(model="tiny-gru", prompt="A", max_tokens=5000, seed=1, flush_chars=1)
    with patched_run(s, "tiny-gru", slowed(0.005)):
        held = [s.stub.Generate(request, timeout=120) for _ in range(2)]
        for call in held:
            next(call)  # both running
        err = _error(lambda: _classify(s.stub, ["fine"]))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
        for call in held:
            call.cancel()
        assert s.wait_for(lambda: s.server.open_requests() == 0, timeout=60)
    # the slots come back: a new call is served once grpc has seen the cancelled ones end
    assert s.wait_for(lambda: _served(s), timeout=60)


def _served(s) -> bool:
    try:
        return len(_classify(s.stub, ["fine"]).results) == 1
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
        return False


@pytest.fixture(scope="module")
def budgeted(serve):
    return serve(max_request_s=1.5, max_tokens_limit=100_000)


def test_a_stream_over_the_time_budget_ends_with_deadline_exceeded_and_frees_its_slot(budgeted):
    s = budgeted
    before = s.metric("rnnserve_requests_total", method="Generate", code="DEADLINE_EXCEEDED")
    request = pb.GenerateRequest(model="tiny-lstm", prompt="A", max_tokens=50_000, seed=1, flush_chars=8)
    with patched_run(s, "tiny-lstm", slowed(0.005)):  # 50,000 steps of >= 5 ms: far past the budget
        err = _error(lambda: list(s.stub.Generate(request, timeout=120)))
        assert (err.code(), err.details()) == (grpc.StatusCode.DEADLINE_EXCEEDED, BUDGET_MESSAGE)
        assert s.wait_for(lambda: s.server.open_requests() == 0, timeout=30)
    assert s.metric("rnnserve_requests_total", method="Generate", code="DEADLINE_EXCEEDED") == before + 1


def test_a_unary_call_over_the_time_budget_ends_with_deadline_exceeded(budgeted):
    s = budgeted
    returned = threading.Event()

    def slow_then_tell(run):
        def slow(*args):
            time.sleep(4.0)
            out = run(*args)
            returned.set()
            return out
        return slow

    with patched_run(s, "tiny-sentiment", slow_then_tell):
        err = _error(lambda: _classify(s.stub, ["fine"]))
        assert (err.code(), err.details()) == (grpc.StatusCode.DEADLINE_EXCEEDED, BUDGET_MESSAGE)
        assert returned.wait(60)  # the model call itself cannot be interrupted; its reply is dropped
    assert len(_classify(s.stub, ["fine"]).results) == 1


def test_the_clients_shorter_deadline_still_applies(budgeted):
    s = budgeted
    request = pb.GenerateRequest(model="tiny-lstm", prompt="A", max_tokens=50_000, seed=1)
    with patched_run(s, "tiny-lstm", slowed(0.005)):
        err = _error(lambda: list(s.stub.Generate(request, timeout=0.3)))
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and err.details() != BUDGET_MESSAGE
        assert s.wait_for(lambda: s.server.open_requests() == 0, timeout=30)


def test_a_client_that_reads_nothing_is_ended_by_the_budget(budgeted):
    """The server ends the call, and frees its slot, while the client has not read a single message."""
    s = budgeted
    before = s.metric("rnnserve_requests_total", method="Generate", code="DEADLINE_EXCEEDED")
    request = pb.GenerateRequest(model="tiny-lstm", prompt="A", max_tokens=100_000, seed=1, flush_chars=1, logprobs=True)
    with patched_run(s, "tiny-lstm", slowed(0.0005)):  # >= 50 s of steps: the budget ends it, not max_tokens
        call = s.stub.Generate(request, timeout=120)
        assert s.wait_for(lambda: s.metric("rnnserve_requests_total", method="Generate",
                                           code="DEADLINE_EXCEEDED") == before + 1, timeout=60)
        assert s.wait_for(lambda: s.server.open_requests() == 0, timeout=30)
        err = _error(lambda: list(call))
    assert (err.code(), err.details()) == (grpc.StatusCode.DEADLINE_EXCEEDED, BUDGET_MESSAGE)


def test_a_v2_stream_session_outlives_the_budget_which_applies_to_each_of_its_requests(budgeted):
    """A decoupled v2 stream carries many requests over a long session: only a request over budget ends."""
    s = budgeted
    stub = v2_grpc.GRPCInferenceServiceStub(s.channel)
    sent_last = threading.Event()

    def requests():
        yield _v2_generate("long", max_tokens=50_000)  # >= 250 s of slowed steps: over the 1.5 s budget
        yield _v2_generate("early", max_tokens=5)
        time.sleep(2.5)  # the session is now older than the budget
        yield _v2_generate("late", max_tokens=5)
        sent_last.set()

    with patched_run(s, "tiny-lstm", slowed(0.005)):
        replies = list(stub.ModelStreamInfer(requests(), timeout=120))
    assert sent_last.is_set()
    errors = {r.infer_response.id: r.error_message for r in replies if r.error_message}
    finals = {r.infer_response.id for r in replies if r.infer_response.parameters[FINAL].bool_param}
    assert errors == {"long": BUDGET_MESSAGE}
    assert finals == {"early", "late"}


def _v2_generate(request_id: str, max_tokens: int) -> v2.ModelInferRequest:
    req = v2.ModelInferRequest(model_name="tiny-lstm", id=request_id, inputs=[v2.ModelInferRequest.InferInputTensor(
        name="prompt", datatype="BYTES", shape=[1])])
    req.raw_input_contents.append(pack_bytes([b"ROMEO:"]))
    req.parameters["max_tokens"].int64_param = max_tokens
    return req
