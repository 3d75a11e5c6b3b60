"""Test harness: a real server on port 0 (its own event loop in a thread), a real channel, the real /metrics."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
from prometheus_client.parser import text_string_to_metric_families

from protos.build import build, stale

if stale():  # generated code is not committed: the tests make it, like `make proto`
    build()

from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from service.server import Server, create_server
from service.settings import Settings


class Running:
    """An in-process server plus a channel and stub to it."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: Server
        self.server, self.port = self.call(create_server(settings), timeout=120)
        self.channel = grpc.insecure_channel(f"localhost:{self.port}")
        self.http = f"http://localhost:{self.server.http_port}"  # base URL of the HTTP API (http_port -1: none)
        self.stub = pb_grpc.InferenceStub(self.channel)

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://localhost:{self.server.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples with these labels, from a fresh scrape of /metrics (0 when absent):
        rnnserve_requests_total{method, code} counts both protocols unless `protocol` is given."""
        return sum(s.value for family in text_string_to_metric_families(self.metrics_text()) for s in family.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def stop(self) -> None:
        self.channel.close()
        if not self.server.stopped.is_set():
            self.call(self.server.shutdown(0.5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def settings(model_repo, **overrides) -> Settings:
    # Every scrape renders afresh and none is refused: tests read metrics right after what changed them. Tests hold
    # up to 64 calls on one channel, past a replica's own cap per connection (test_transport.py tests that cap).
    defaults = {"host": "localhost", "port": 0, "health_port": 0, "metrics_host": "localhost", "metrics_port": 0,
                "http_host": "localhost", "http_port": 0, "model_dir": str(model_repo), "intra_op_threads": 1,
                "metrics_cache_s": 0.0, "metrics_max_per_s": 1e6, "metrics_max_clients": 64,
                "max_streams_per_connection": 1024}
    return Settings(**{**defaults, **overrides})


@contextmanager
def servers(model_repo) -> Iterator[Callable[..., Running]]:
    """start(**settings) -> a running server over model_repo; every one started is stopped when the block ends."""
    started: list[Running] = []

    def start(**overrides) -> Running:
        started.append(Running(settings(model_repo, **overrides)))
        return started[-1]

    try:
        yield start
    finally:
        for running in started:
            running.stop()


def generate(stub, **fields) -> tuple[str, list[pb.GenerateResponse]]:
    """Run one Generate to the end: the text and every message."""
    replies = list(stub.Generate(pb.GenerateRequest(**fields), timeout=60))
    return "".join(r.text for r in replies), replies


@contextmanager
def patched_run(running: Running, model: str, wrap: Callable[[Callable], Callable]) -> Iterator[None]:
    """Replace a model's runner.run with wrap(run) for the duration (e.g. to slow it down or break it)."""
    runner = running.server.host.repo.get(model).runner
    runner.run = wrap(runner.run)
    try:
        yield
    finally:
        del runner.run


def held(release: threading.Event) -> Callable[[Callable], Callable]:
    """A model call that waits until `release` is set (at most 60 s): work stays in flight as long as a test needs,
    however slow the machine, where a fixed sleep could end before a loaded test gets to look."""
    def wrap(run: Callable) -> Callable:
        def hold(*args):
            release.wait(60)
            return run(*args)
        return hold
    return wrap


def slowed(seconds: float = 0.002) -> Callable[[Callable], Callable]:
    """A model step that takes at least `seconds`: keeps streams running while a test looks at them."""
    def wrap(run: Callable) -> Callable:
        def slow(*args):
            time.sleep(seconds)
            return run(*args)
        return slow
    return wrap
