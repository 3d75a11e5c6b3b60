"""Every bad request gets its status code and a message naming the field; no traceback reaches the client."""

from __future__ import annotations

import grpc
import pytest

from tests.service.harness import generate, pb

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
    runner = server.server.repo.get(name).runner

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
