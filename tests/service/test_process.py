"""The real process: the server (without torch) drains on SIGTERM; `python -m service.client` streams from a server."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.service.harness import pb, pb_grpc

ROOT = Path(__file__).resolve().parents[2]


# `python -m service` with torch and training made unimportable: the service must never need them.
SERVE_WITHOUT_TORCH = ("import runpy, sys; sys.modules['torch'] = sys.modules['training'] = None; "
                       "runpy.run_module('service', run_name='__main__', alter_sys=True)")


class Process:
    """The server process on free ports; its log lines are collected from stderr."""

    def __init__(self, model_repo: Path, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE_WITHOUT_TORCH, "--model-dir", str(model_repo), "--host", "localhost",
             "--port", "0", "--health-port", "0", "--metrics-port", "-1", "--intra-op-threads", "1", *flags],
            cwd=ROOT, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.proc.stderr], daemon=True).start()
        self.port = int(self.wait_for(r"on port (\d+)").group(1))
        self.channel = grpc.insecure_channel(f"localhost:{self.port}")
        self.stub = pb_grpc.InferenceStub(self.channel)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        while True:
            line = self.lines.get(timeout=timeout)
            if m := re.search(pattern, line):
                return m

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


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
    assert {m["name"] for m in models} == {"tiny-lstm", "tiny-gru", "tiny-sentiment"}
    lstm = next(m for m in models if m["name"] == "tiny-lstm")
    assert lstm["sizes"]["n_layer"] == 2 and lstm["vocab_size"] == lstm["sizes"]["vocab_size"]
    r = subprocess.run([sys.executable, "-m", "service.client", "--target", f"localhost:{server.port}", "generate",
                        "--model", "nope", "x"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "NOT_FOUND" in r.stderr and "Traceback" not in r.stderr
