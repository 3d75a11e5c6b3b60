"""Deploy tests: real nginx, Prometheus and rnnserve processes on loopback; helpers shared with the container test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.build import build, stale

if stale():  # generated code is not committed: the tests make it, like `make proto`
    build()

from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMPT = "ROMEO:"


def require(*tools: str) -> None:
    """Skip when a system tool is missing, except in CI, where `make test` installs them (make system-packages)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        message = f"missing {' '.join(missing)}: run `make system-packages` (as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    """Poll predicate() until it returns something truthy; fail with `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception as err:  # not up yet: connection refused, UNAVAILABLE, ...
            value, last = None, err
        else:
            last = None
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last})" if last else ""))
        time.sleep(interval)


def health(target: str, service: str = "", timeout: float = 2.0) -> str:
    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def generate(stub: pb_grpc.InferenceStub, model: str, max_tokens: int, timeout: float = 60, **fields) -> tuple[str, int]:
    """One Generate stream to its end: the text and the server's count of generated characters."""
    text, usage = [], None
    for reply in stub.Generate(pb.GenerateRequest(model=model, prompt=PROMPT, max_tokens=max_tokens, seed=1,
                                                  **fields), timeout=timeout):
        text.append(reply.text)
        if reply.HasField("finished"):
            usage = reply.finished.usage.generated_chars
    assert usage is not None, "the stream ended without its `finished` message"
    return "".join(text), usage


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples in a /metrics page that carry these labels."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def promql(base: str, query: str) -> list[dict]:
    """An instant query against Prometheus' HTTP API; fails the test unless the query itself succeeded."""
    reply = json.loads(http_get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': query})}"))
    assert reply["status"] == "success", f"{query}: {reply}"
    return reply["data"]["result"]


class Replica:
    """`python -m service` in its own process on loopback ports, as a deployment runs it."""

    def __init__(self, model_dir: Path, log: Path, **settings: str) -> None:
        self.port, self.metrics_port, self.http_port = free_port(), free_port(), free_port()
        self.target = f"127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")}
        env.update(RNNSERVE_MODEL_DIR=str(model_dir), RNNSERVE_HOST="127.0.0.1", RNNSERVE_PORT=str(self.port),
                   RNNSERVE_HEALTH_PORT="0", RNNSERVE_METRICS_HOST="127.0.0.1", RNNSERVE_METRICS_PORT=str(self.metrics_port),
                   RNNSERVE_HTTP_HOST="127.0.0.1", RNNSERVE_HTTP_PORT=str(self.http_port),
                   RNNSERVE_INTRA_OP_THREADS="1", RNNSERVE_GRACE_S="5",
                   # The tests read counters right after the requests they count: no cached or rate-limited scrape.
                   RNNSERVE_METRICS_CACHE_S="0", RNNSERVE_METRICS_MAX_PER_S="1000")
        env.update({f"RNNSERVE_{name.upper()}": value for name, value in settings.items()})
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log.open("w"),
                                     stderr=subprocess.STDOUT)
        wait_until(lambda: self._check() == "SERVING", 120, f"rnnserve on {self.target} (log: {log})")

    def _check(self) -> str:
        if self.proc.poll() is not None:
            pytest.fail(f"rnnserve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        return health(self.target)

    def metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def replicas(model_repo: Path, tmp_path: Path) -> Iterator[Callable[[int], list[Replica]]]:
    """replicas(n, **settings) -> n rnnserve processes over the session's tiny models; all stopped at the end."""
    started: list[Replica] = []

    def start(n: int, **settings: str) -> list[Replica]:
        for _ in range(n):
            started.append(Replica(model_repo, tmp_path / f"rnnserve-{len(started)}.log", **settings))
        return started[-n:]

    yield start
    for r in started:
        r.stop()


@contextmanager
def process(args: list[str], log: Path, **kwargs) -> Iterator[subprocess.Popen]:
    """A server process for the duration of the block, its output in `log`; terminated (then killed) after."""
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **kwargs)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
