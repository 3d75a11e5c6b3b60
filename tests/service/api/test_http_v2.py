"""Open Inference Protocol over HTTP/REST: the official tritonclient.http against a real server, results equal to gRPC's."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.service.api.test_v2 import CASES, TEXTS
from tests.support.data import ROOT
from tests.support.harness import generate, pb

CLIENT = ROOT / "tests" / "support" / "triton_http_client.py"
pytestmark = pytest.mark.process  # tritonclient runs in its own process (gevent)


@pytest.fixture(scope="module")
def triton(server) -> dict:
    run = subprocess.run([sys.executable, str(CLIENT), server.http.removeprefix("http://"), json.dumps(CASES)],
                         capture_output=True, text=True, timeout=240, cwd=CLIENT.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def test_readiness_metadata_and_config(triton):
    assert triton["live"] and triton["ready"]
    assert triton["server"]["name"] == "rnnserve" and "model_configuration" in triton["server"]["extensions"]
    assert triton["model_ready"] == {"tiny-lstm": True, "tiny-sentiment": True, "no-such-model": False}
    lm, clf = triton["metadata"]["tiny-lstm"], triton["metadata"]["tiny-sentiment"]
    assert lm["versions"] == ["1"] and lm["platform"] == "rnnserve_char_lm"
    assert [(t["name"], t["datatype"], t["shape"]) for t in clf["outputs"]] == [
        ("label", "BYTES", [-1]), ("probabilities", "FP32", [-1, 2])]
    assert triton["config"]["tiny-lstm"]["model_transaction_policy"] == {"decoupled": True}


def test_classify_equals_grpc_as_binary_and_json(triton, server):
    native = server.stub.Classify(pb.ClassifyRequest(model="tiny-sentiment", texts=TEXTS), timeout=30)
    for binary in (True, False):
        got = triton[f"classify_binary_{binary}"]
        assert got["labels"] == [r.label for r in native.results] and got["id"] == "c1"
        np.testing.assert_allclose(got["probabilities"], [list(r.probabilities) for r in native.results], atol=1e-6)
    np.testing.assert_allclose(triton["classify_default"], [list(r.probabilities) for r in native.results], atol=1e-6)


def test_generation_equals_grpc(triton, server):
    text, _ = generate(server.stub, model="tiny-lstm", prompt="ROMEO:", max_tokens=50, temperature=0.9, seed=3)
    for binary in (True, False):
        got = triton[f"infer_binary_{binary}"]
        assert got["text"] == text
        assert got["parameters"] == {"finish_reason": "length", "prompt_chars": 6, "generated_chars": 50}


def test_errors_carry_the_status_and_the_field(triton):
    e = triton["errors"]
    assert e["unknown_model"]["status"] == "404" and "no-such-model" in e["unknown_model"]["message"]
    assert e["bad_datatype"]["status"] == "400" and "datatype" in e["bad_datatype"]["message"]
    assert e["wrong_input"]["status"] == "400" and "prompt" in e["wrong_input"]["message"]
    assert e["bad_temperature"]["status"] == "400" and "temperature" in e["bad_temperature"]["message"]
    assert e["unknown_parameter"]["status"] == "400" and "tempature" in e["unknown_parameter"]["message"]
    assert e["unsupported_route"]["status"] in ("404", "405")


def test_a_model_that_is_not_ready_says_why(server):
    """A 404 readiness reply is an error like the others: JSON with an `error` naming the model and version."""
    from tests.support.http_client import call

    status, headers, reply = call(server.http, "GET", "/v2/models/tiny-lstm/versions/999999999999/ready")
    assert status == 404 and headers["content-type"] == "application/json"
    assert reply == {"name": "tiny-lstm", "ready": False, "error": "version 999999999999 of model 'tiny-lstm' is not loaded"}
    status, _, reply = call(server.http, "GET", "/v2/models/tiny-lstm/ready")
    assert status == 200 and reply == {"name": "tiny-lstm", "ready": True}
