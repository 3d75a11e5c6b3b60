"""The real process: the server (without torch) drains on SIGTERM; `python -m service.client` streams from a server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.data import ROOT
from tests.support.harness import pb
from tests.support.process import Process

pytestmark = [pytest.mark.slow, pytest.mark.process]  # runs the server (or its client) as a process of its own


@pytest.fixture
def process(model_repo):
    started = []

    def start(*flags: str) -> Process:
        started.append(Process(model_repo, *flags))
        return started[-1]

    yield start
    for p in started:
        p.close()


def _status(p: Process) -> int:
    health = health_pb2_grpc.HealthStub(p.channel)
    return health.Check(health_pb2.HealthCheckRequest(service="rnnserve.v1.Inference/tiny-lstm"), timeout=10).status


def test_sigterm_drains_running_streams_then_exits(process):
    p = process("--grace-s", "60", "--max-tokens-limit", "100000")
    assert _status(p) == health_pb2.HealthCheckResponse.SERVING
    call = p.stub.Generate(pb.GenerateRequest(model="tiny-lstm", prompt="A", max_tokens=100_000, seed=1), timeout=120)
    first = next(call)
    p.proc.send_signal(signal.SIGTERM)
    p.wait_for("shutting down")
    assert _status(p) == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as err:
        list(p.stub.Generate(pb.GenerateRequest(model="tiny-lstm", prompt="A", max_tokens=5), timeout=10))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    rest = list(call)  # the running stream still runs to its end
    assert len(first.text) + sum(len(r.text) for r in rest) == 100_000
    assert rest[-1].finished.finish_reason == pb.FINISH_REASON_LENGTH
    assert p.proc.wait(30) == 0


def test_streams_past_the_grace_period_are_cut_and_the_process_exits(process):
    p = process("--grace-s", "0.2", "--max-tokens-limit", "100000")
    calls = [p.stub.Generate(pb.GenerateRequest(model="tiny-lstm", prompt="A", max_tokens=100_000, flush_ms=1), timeout=120)
             for _ in range(4)]
    for call in calls:
        next(call)
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(30) == 0
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            list(call)
        assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def test_client_cli_streams_classifies_and_lists(server):
    def client(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "service.client", "--target", f"localhost:{server.port}", *args],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    out = client("generate", "--model", "tiny-lstm", "ROMEO:", "-n", "40", "--seed", "1", "--flush-chars", "4")
    assert out.startswith("ROMEO:") and len(out.rstrip("\n")) >= 46
    lines = client("classify", "--model", "tiny-sentiment", "a fine film", "dull").splitlines()
    assert [line.split("\t")[2] for line in lines] == ["a fine film", "dull"]
    assert all(line.split("\t")[0] in ("negative", "positive") for line in lines)
    models = [json.loads(line) for line in client("models").splitlines()]
    assert {m["name"] for m in models} == {"tiny-lstm", "tiny-gru", "tiny-sentiment", "tiny-translator", "tiny-captioner"}
    lstm = next(m for m in models if m["name"] == "tiny-lstm")
    assert lstm["sizes"]["n_layer"] == 2 and lstm["vocab_size"] == lstm["sizes"]["vocab_size"]
    r = subprocess.run([sys.executable, "-m", "service.client", "--target", f"localhost:{server.port}", "generate",
                        "--model", "nope", "x"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "NOT_FOUND" in r.stderr and "Traceback" not in r.stderr
