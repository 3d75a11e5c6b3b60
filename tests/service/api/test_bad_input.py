"""Every bad request gets its status code and a message naming the field; no traceback reaches the client."""

from __future__ import annotations

import gc

import grpc
import pytest

from tests.support.fuzz_strategies import length_delimited
from tests.support.harness import generate, pb

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
LM = {"model": "tiny-lstm", "prompt": "ROMEO:", "max_tokens": 5}

GENERATE_CASES = {
    "unknown model": ({**LM, "model": "nope"}, NOT_FOUND, "nope"),
    "unknown version": ({**LM, "version": 7}, NOT_FOUND, "version 7"),
    "classifier": ({**LM, "model": "tiny-sentiment"}, PRECONDITION, "classifier"),
    "empty prompt": ({**LM, "prompt": ""}, INVALID, "prompt"),
    "oversized prompt": ({**LM, "prompt": "x" * 501}, INVALID, "prompt"),
    "negative temperature": ({**LM, "temperature": -0.5}, INVALID, "temperature"),
    "NaN temperature": ({**LM, "temperature": float("nan")}, INVALID, "temperature"),
    "infinite temperature": ({**LM, "temperature": float("inf")}, INVALID, "temperature"),
    "top_p zero": ({**LM, "top_p": 0.0}, INVALID, "top_p"),
    "top_p above one": ({**LM, "top_p": 1.5}, INVALID, "top_p"),
    "NaN top_p": ({**LM, "top_p": float("nan")}, INVALID, "top_p"),
    "negative top_k": ({**LM, "top_k": -1}, INVALID, "top_k"),
    "zero max_tokens": ({**LM, "max_tokens": 0}, INVALID, "max_tokens"),
    "negative max_tokens": ({**LM, "max_tokens": -3}, INVALID, "max_tokens"),
    "max_tokens over the limit": ({**LM, "max_tokens": 5001}, INVALID, "max_tokens"),
    "too many stop sequences": ({**LM, "stop": ["a", "b", "c", "d", "e"]}, INVALID, "stop"),
    "empty stop sequence": ({**LM, "stop": ["ok", ""]}, INVALID, "stop[1]"),
    "long stop sequence": ({**LM, "stop": ["y" * 33]}, INVALID, "stop[0]"),
    "flush_chars too large": ({**LM, "flush_chars": 5000}, INVALID, "flush_chars"),
    "flush_ms too large": ({**LM, "flush_ms": 20_000}, INVALID, "flush_ms"),
}


@pytest.mark.parametrize("case", GENERATE_CASES)
def test_generate_rejects(server, case):
    fields, code, needle = GENERATE_CASES[case]
    with pytest.raises(grpc.RpcError) as err:
        generate(server.stub, **fields)
    assert err.value.code() == code
    assert needle in err.value.details() and "Traceback" not in err.value.details()


CLASSIFY_CASES = {
    "unknown model": ({"model": "nope", "texts": ["fine"]}, NOT_FOUND, "nope"),
    "language model": ({"model": "tiny-lstm", "texts": ["fine"]}, PRECONDITION, "char_lm"),
    "no texts": ({"model": "tiny-sentiment", "texts": []}, INVALID, "texts"),
    "text without tokens": ({"model": "tiny-sentiment", "texts": ["good", "   "]}, INVALID, "texts[1]"),
    "oversized text": ({"model": "tiny-sentiment", "texts": ["a " * 300]}, INVALID, "texts[0]"),
    "too many texts": ({"model": "tiny-sentiment", "texts": ["a"] * 65}, INVALID, "texts"),
}


@pytest.mark.parametrize("case", CLASSIFY_CASES)
def test_classify_rejects(server, case):
    fields, code, needle = CLASSIFY_CASES[case]
    with pytest.raises(grpc.RpcError) as err:
        server.stub.Classify(pb.ClassifyRequest(**fields), timeout=30)
    assert err.value.code() == code and needle in err.value.details()


def test_get_model_unknown(server):
    with pytest.raises(grpc.RpcError) as err:
        server.stub.GetModel(pb.GetModelRequest(name="nope"), timeout=30)
    assert err.value.code() == NOT_FOUND


@pytest.mark.parametrize("method", ["Generate", "Classify"])
def test_a_failing_model_call_is_internal_without_traceback_and_the_server_stays_up(server, method):
    name = "tiny-lstm" if method == "Generate" else "tiny-sentiment"
    runner = server.server.host.repo.get(name).runner

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail of a bug")

    before = server.metric("rnnserve_requests_total", method=method, code="INTERNAL")
    runner.run = broken
    try:
        with pytest.raises(grpc.RpcError) as err:
            if method == "Generate":
                generate(server.stub, **LM)
            else:
                server.stub.Classify(pb.ClassifyRequest(model=name, texts=["fine"]), timeout=30)
    finally:
        del runner.run
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in err.value.details() and "Traceback" not in err.value.details()
    assert server.metric("rnnserve_requests_total", method=method, code="INTERNAL") == before + 1
    if method == "Generate":
        assert len(generate(server.stub, **LM)[0]) == 5
    else:
        assert len(server.stub.Classify(pb.ClassifyRequest(model=name, texts=["fine"]), timeout=30).results) == 1


LONE_SURROGATE = b"\xed\xa0\x80"  # U+D800 as CESU-8: what a client that does not validate UTF-8 sends for "\ud800"
WIRE_CASES = {  # method path, response streaming, request bytes, the start of the details
    "bad UTF-8 prompt": ("/rnnserve.v1.Inference/Generate", True,
                         pb.GenerateRequest(model="tiny-lstm", max_tokens=5).SerializeToString()
                         + length_delimited(3, b"ROMEO" + LONE_SURROGATE), "prompt: not valid UTF-8"),
    "bad UTF-8 second text": ("/rnnserve.v1.Inference/Classify", False,
                              pb.ClassifyRequest(model="tiny-sentiment", texts=["fine"]).SerializeToString()
                              + length_delimited(3, b"\xff"), "texts[1]: not valid UTF-8"),
    "truncated": ("/rnnserve.v1.Inference/GetModel", False, pb.GetModelRequest(name="tiny-lstm").SerializeToString()[:-2],
                  "request: not a valid rnnserve.v1.GetModelRequest message (Wire format was corrupt"),
    "bad UTF-8 v2 input name": ("/inference.GRPCInferenceService/ModelInfer", False,
                                length_delimited(5, length_delimited(1, b"prompt\xc0\x80")), "inputs[0].name: not valid UTF-8"),
}


@pytest.mark.parametrize("case", WIRE_CASES)
def test_undecodable_request_bytes_are_invalid_argument_naming_the_field(server, case):
    """grpc's aio server answered these UNKNOWN ("Unexpected <class 'DecodeError'>") with a traceback in the log."""
    path, streaming, raw, needle = WIRE_CASES[case]
    method = path.rpartition("/")[2]
    before = server.metric("rnnserve_requests_total", method=method, code="INVALID_ARGUMENT")
    call = (server.channel.unary_stream if streaming else server.channel.unary_unary)(path)  # bytes as they are
    with pytest.raises(grpc.RpcError) as err:
        list(call(raw, timeout=30)) if streaming else call(raw, timeout=30)
    assert err.value.code() == INVALID and err.value.details().startswith(needle), err.value.details()
    assert server.metric("rnnserve_requests_total", method=method, code="INVALID_ARGUMENT") == before + 1
    assert len(generate(server.stub, **LM)[0]) == 5


def test_an_undecodable_message_in_a_request_stream_ends_the_stream_with_invalid_argument(server):
    call = server.channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
    with pytest.raises(grpc.RpcError) as err:
        list(call(iter([length_delimited(1, b"tiny-lstm\xff")]), timeout=30))
    assert err.value.code() == INVALID and err.value.details().startswith("model_name: not valid UTF-8")


@pytest.mark.slow
def test_refused_requests_are_freed_at_once_not_left_in_reference_cycles(server):
    """context.abort's AbortError sits in a reference cycle with the call's frames: each refused request (up to
    4 MB) stayed in memory until the next full garbage collection, ~400 MB over a fuzz run of big requests."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the next collection finds unreachable is kept in gc.garbage to look at
    try:
        for fields in ({"name": "nope"}, {"name": "tiny-lstm", "version": 9}):
            with pytest.raises(grpc.RpcError):
                server.stub.GetModel(pb.GetModelRequest(**fields), timeout=30)
        with pytest.raises(grpc.RpcError):
            generate(server.stub, **{**LM, "top_p": 2.0})
        gc.collect()
        cyclic = [type(o).__name__ for o in gc.garbage if isinstance(o, pb.GetModelRequest | pb.GenerateRequest)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cyclic == []
