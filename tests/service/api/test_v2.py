"""Open Inference Protocol (KServe v2): the official tritonclient against a real server, results equal to the native API's."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys

import grpc
import numpy as np
import pytest

from service.api.v2_params import pack_bytes
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from tests.support.data import ROOT
from tests.support.harness import generate, patched_run, slowed

CLIENT = ROOT / "tests" / "support" / "triton_client.py"
TEXTS = ["a gripping , funny and moving film", "dull , tedious and far too long", "ok"]
CASES = {
    "models": ["tiny-lstm", "tiny-sentiment"],
    "classify": {"model": "tiny-sentiment", "texts": TEXTS},
    "infer": {"model": "tiny-lstm", "prompt": "ROMEO:", "parameters": {"max_tokens": 50, "temperature": 0.9, "seed": 3}},
    "stream": [
        {"id": "a", "model": "tiny-lstm", "prompt": "KING:",
         "parameters": {"max_tokens": 80, "temperature": 0.8, "top_k": 20, "top_p": 0.95, "seed": 7, "flush_chars": 8}},
        {"id": "b", "model": "tiny-gru", "prompt": "First",
         "parameters": {"max_tokens": 200, "temperature": 1.0, "seed": 11, "stop": '["zz", "\\n"]', "flush_chars": 4}},
    ],
}
NATIVE = {"a": {"model": "tiny-lstm", "prompt": "KING:", "max_tokens": 80, "temperature": 0.8, "top_k": 20, "top_p": 0.95,
                "seed": 7},
          "b": {"model": "tiny-gru", "prompt": "First", "max_tokens": 200, "temperature": 1.0, "seed": 11, "stop": ["zz", "\n"]}}


@pytest.fixture(scope="module")
def triton(server) -> dict:
    """Everything the tritonclient run saw (one process, see triton_client.py)."""
    run = subprocess.run([sys.executable, str(CLIENT), str(server.port), json.dumps(CASES)],
                         capture_output=True, text=True, timeout=240, cwd=CLIENT.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


@pytest.fixture(scope="module")
def stub(server) -> v2_grpc.GRPCInferenceServiceStub:
    return v2_grpc.GRPCInferenceServiceStub(server.channel)


@pytest.mark.process
def test_readiness_and_metadata(triton):
    assert triton["live"] and triton["ready"]
    assert triton["server"]["name"] == "rnnserve"
    assert triton["model_ready"] == {"tiny-lstm": True, "tiny-sentiment": True, "no-such-model": False}
    lm, clf = triton["metadata"]["tiny-lstm"], triton["metadata"]["tiny-sentiment"]
    assert lm["versions"] == ["1"] and lm["platform"] == "rnnserve_char_lm"
    assert [(t["name"], t["datatype"], t["shape"]) for t in lm["inputs"]] == [("prompt", "BYTES", ["1"])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in clf["outputs"]] == [
        ("label", "BYTES", ["-1"]), ("probabilities", "FP32", ["-1", "2"])]
    assert triton["config"]["tiny-lstm"]["config"]["model_transaction_policy"] == {"decoupled": True}
    assert len(json.loads(triton["config"]["tiny-sentiment"]["config"]["parameters"]["labels"]["string_value"])) == 2


@pytest.mark.process
def test_classify_equals_native(triton, server):
    native = server.stub.Classify(pb.ClassifyRequest(model="tiny-sentiment", texts=TEXTS), timeout=30)
    got = triton["classify"]
    assert got["labels"] == [r.label for r in native.results]
    np.testing.assert_allclose(got["probabilities"], [list(r.probabilities) for r in native.results], atol=1e-6)
    assert got["id"] == "c1" and got["version"] == "1"
    assert triton["classify_label_only"] == ["label"]


@pytest.mark.process
def test_infer_generation_equals_native(triton, server):
    text, _ = generate(server.stub, model="tiny-lstm", prompt="ROMEO:", max_tokens=50, temperature=0.9, seed=3)
    assert triton["infer"]["text"] == text and len(text) == 50
    assert triton["infer"]["finish_reason"] == "length"


@pytest.mark.process
def test_stream_decoupled_responses_equal_native(triton, server):
    assert triton["stream_errors"] and "no-such-model" in triton["stream_errors"][0]  # and the other streams went on
    for sid, fields in NATIVE.items():
        got = triton["stream"][sid]
        text, _ = generate(server.stub, **fields)
        assert got["text"] == text
        # How many responses depends on how many chunks the server had merged when it sent each (timing);
        # that each chunk is one response, the last one final, is tested step by step in test_v2_stream.py.
        assert got["final"] == [False] * (got["responses"] - 1) + [True]
    assert triton["stream"]["a"]["finish_reason"] == "length"
    assert triton["stream"]["b"]["finish_reason"] == "stop" and "\n" not in triton["stream"]["b"]["text"]


@pytest.mark.process
def test_errors_follow_the_protocol(triton):
    e = triton["errors"]
    assert e["unknown_model"]["status"] == "StatusCode.NOT_FOUND" and "no-such-model" in e["unknown_model"]["message"]
    invalid = {"bad_datatype": ("datatype", "BYTES"), "missing_input": ("missing input", "text"), "wrong_input": ("prompt",),
               "bad_temperature": ("temperature",), "unknown_parameter": ("tempature",)}
    for case, words in invalid.items():
        assert e[case]["status"] == "StatusCode.INVALID_ARGUMENT", (case, e[case])
        assert all(w in e[case]["message"] for w in words), (case, e[case])
    assert e["unsupported_rpc"]["status"] == "StatusCode.UNIMPLEMENTED"


@pytest.mark.process
def test_metrics_count_v2_requests(triton, server):
    assert server.metric("rnnserve_requests_total", method="ModelInfer", code="OK") >= 3
    assert server.metric("rnnserve_requests_total", method="ModelInfer", code="NOT_FOUND") >= 1
    assert server.metric("rnnserve_requests_total", method="ModelInfer", code="INVALID_ARGUMENT") >= 5
    assert server.metric("rnnserve_requests_total", method="ModelStreamInfer", code="OK") >= 1
    assert server.metric("rnnserve_requests_total", method="ModelStreamInfer.request", code="OK") >= 2
    assert server.metric("rnnserve_requests_total", method="ModelStreamInfer.request", code="NOT_FOUND") >= 1


def _request(model: str, name: str, texts: list[str], raw: bool = True, **params) -> v2.ModelInferRequest:
    req = v2.ModelInferRequest(model_name=model, inputs=[v2.ModelInferRequest.InferInputTensor(
        name=name, datatype="BYTES", shape=[len(texts)])])
    if raw:
        req.raw_input_contents.append(pack_bytes([t.encode() for t in texts]))
    else:
        req.inputs[0].contents.bytes_contents.extend(t.encode() for t in texts)
    for k, v in params.items():
        if isinstance(v, str):
            req.parameters[k].string_param = v
        else:
            req.parameters[k].int64_param = v
    return req


def test_typed_contents_equal_raw_contents(stub):
    raw = stub.ModelInfer(_request("tiny-lstm", "prompt", ["To be"], max_tokens=20, seed=5), timeout=30)
    typed = stub.ModelInfer(_request("tiny-lstm", "prompt", ["To be"], raw=False, max_tokens=20, seed=5), timeout=30)
    assert raw.raw_output_contents == typed.raw_output_contents


@pytest.mark.parametrize(("change", "words"), [
    (lambda r: r.inputs[0].shape.extend([1]), "shape"),
    (lambda r: r.inputs[0].shape.__setitem__(0, 2), "shape"),
    (lambda r: setattr(r, "model_version", "latest"), "model_version"),
    (lambda r: r.raw_input_contents.__setitem__(0, b"\xff\x00\x00\x00ab"), "runs past"),
    (lambda r: r.parameters["max_tokens"].__setattr__("string_param", "ten"), "max_tokens"),
    (lambda r: r.parameters["seed"].__setattr__("int64_param", -1), "seed"),
    (lambda r: r.parameters["max_tokens"].__setattr__("int64_param", 10**9), "max_tokens"),
    (lambda r: r.outputs.add(name="logits"), "logits"),
])
def test_bad_requests_are_invalid_argument(stub, change, words):
    req = _request("tiny-lstm", "prompt", ["To be"])
    change(req)
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in err.value.details()


@pytest.mark.parametrize("version", ["\u00b9", "\u0662", "\uff11"])  # superscript one, Arabic-Indic two, fullwidth one
def test_version_of_non_ascii_digits_is_invalid_argument(stub, version):
    """str.isdigit() takes "¹", int() does not: this was INTERNAL."""
    for call in (lambda: stub.ModelReady(v2.ModelReadyRequest(name="tiny-lstm", version=version), timeout=10),
                 lambda: stub.ModelInfer(v2.ModelInferRequest(model_name="tiny-lstm", model_version=version), timeout=10)):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "version" in err.value.details()


def test_stop_nested_too_deep_for_json_is_one_stop_sequence(stub):
    """A string the JSON parser recurses too deep on was INTERNAL (RecursionError); it is one (too long) sequence."""
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(_request("tiny-lstm", "prompt", ["To be"], stop="[" * 100_000), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("stop[0]:")


def test_error_echoing_a_megabyte_value_is_cut_not_resource_exhausted(stub):
    """The echoed value made a 1 MB status message: the client refused the trailer and saw RESOURCE_EXHAUSTED."""
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelReady(v2.ModelReadyRequest(name="tiny-lstm", version="a" * (1 << 20)), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("version: must be") and len(err.value.details()) < 2000
    assert re.search(r"\.\.\. \(cut from \d{7} bytes\)$", err.value.details())


def test_shape_must_match_the_data(stub):
    req = _request("tiny-sentiment", "text", ["good", "bad"])
    req.inputs[0].shape[0] = 3
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "3 elements, the data has 2" in err.value.details()


def test_empty_prompt_is_validated_like_generate(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(_request("tiny-lstm", "prompt", [""]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "prompt" in err.value.details()


def test_model_ready_of_unknown_version_is_false(stub):
    assert not stub.ModelReady(v2.ModelReadyRequest(name="tiny-lstm", version="9"), timeout=10).ready
    assert stub.ModelReady(v2.ModelReadyRequest(name="tiny-lstm", version="1"), timeout=10).ready


def test_stream_serves_a_classifier_with_one_final_response(stub):
    req = _request("tiny-sentiment", "text", TEXTS[:2])
    req.id = "c"
    (reply,) = list(stub.ModelStreamInfer(iter([req]), timeout=30))
    assert not reply.error_message and reply.infer_response.id == "c"
    assert reply.infer_response.parameters["triton_final_response"].bool_param
    assert list(reply.infer_response.outputs[1].shape) == [2, 2]


def test_stream_error_names_the_failed_request(stub):
    good, bad = _request("tiny-sentiment", "text", ["fine"]), _request("tiny-sentiment", "text", ["fine"])
    bad.id, bad.model_version = "bad", "7"
    replies = list(stub.ModelStreamInfer(iter([bad, good]), timeout=30))
    (err,) = [r for r in replies if r.error_message]
    assert err.infer_response.id == "bad" and "no version 7" in err.error_message
    assert len(replies) == 2


def test_cancelled_stream_frees_its_slot(server, stub):
    with patched_run(server, "tiny-lstm", slowed(0.002)):
        call = stub.ModelStreamInfer(iter([_request("tiny-lstm", "prompt", ["To be"], max_tokens=5000, flush_chars=1)]))
        assert next(call).infer_response.raw_output_contents
        assert server.server.open_requests() == 1
        call.cancel()
        assert server.wait_for(lambda: server.server.open_requests() == 0)


def test_draining_server_is_not_ready_and_refuses_new_work(serve):
    r = serve(grace_s=30.0)
    stub = v2_grpc.GRPCInferenceServiceStub(r.channel)
    with patched_run(r, "tiny-lstm", slowed(0.002)):
        call = stub.ModelStreamInfer(iter([_request("tiny-lstm", "prompt", ["To be"], max_tokens=5000, flush_chars=1)]))
        assert next(call).infer_response.raw_output_contents
        drained = asyncio.run_coroutine_threadsafe(r.server.shutdown(), r.loop)
        assert r.wait_for(lambda: r.server.host.draining)
        assert stub.ServerLive(v2.ServerLiveRequest(), timeout=10).live
        assert not stub.ServerReady(v2.ServerReadyRequest(), timeout=10).ready
        assert not stub.ModelReady(v2.ModelReadyRequest(name="tiny-lstm"), timeout=10).ready
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(_request("tiny-sentiment", "text", ["fine"]), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        call.cancel()
        drained.result(30)
