"""deploy/nginx/nginx.conf with real nginx in front of two real rnnserve processes on loopback."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from bench.failover import nginx_config
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from service.settings import Settings
from tests.deploy.conftest import DEPLOY, PROMPT, free_port, generate, health, http_get, metric, process, require, wait_until
from tests.support.http_client import event_stream

pytestmark = pytest.mark.process  # runs nginx, Prometheus and rnnserve replicas as processes on loopback

MODEL = "tiny-lstm"


def loopback_config(tmp: Path, pair: list, grpc_port: int, status_port: int, http_port: int) -> Path:
    """The deploy config with only its addresses and file locations changed (it must still have each of them once)."""
    return nginx_config(DEPLOY / "nginx" / "nginx.conf", tmp, [r.target for r in pair], grpc_port, status_port,
                        [f"127.0.0.1:{r.http_port}" for r in pair], http_port)


@contextmanager
def behind_nginx(pair: list, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """nginx running the deploy config in front of these replicas: (its gRPC target, its status URL, its HTTP URL)."""
    require("nginx")
    grpc_port, status_port, http_port = free_port(), free_port(), free_port()
    conf = loopback_config(tmp_path, pair, grpc_port, status_port, http_port)
    test = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
                          capture_output=True, text=True, timeout=30)
    assert test.returncode == 0, test.stderr
    assert "syntax is ok" in test.stderr and "test is successful" in test.stderr
    with process(["nginx", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf), "-g", "daemon off;"],
                 tmp_path / "nginx.out"):
        target = f"127.0.0.1:{grpc_port}"
        wait_until(lambda: health(target) == "SERVING", 30, f"nginx on {target}")
        yield target, f"http://127.0.0.1:{status_port}", f"http://127.0.0.1:{http_port}"


@pytest.fixture
def balancer(replicas, tmp_path):
    """Two replicas behind nginx running the deploy config: (grpc target, status url, replicas, access log)."""
    require("nginx")
    pair = replicas(2)
    with behind_nginx(pair, tmp_path) as (target, status, http):
        yield target, status, pair, tmp_path / "access.log", http


def chars(replica) -> float:
    return metric(replica.metrics(), "rnnserve_generated_chars_total", model=MODEL)


def test_one_connection_streams_are_balanced_per_request(balancer):
    target, status, pair, access_log, _ = balancer
    assert http_get(f"{status}/healthz") == "ok\n"
    before = [chars(r) for r in pair]
    with grpc.insecure_channel(target) as channel:  # one HTTP/2 connection to nginx for all the streams
        stub = pb_grpc.InferenceStub(channel)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: generate(stub, MODEL, 400, flush_chars=4), range(8)))
    assert [n for _, n in results] == [400] * 8 and all(len(text) == 400 for text, _ in results)
    served = [chars(r) - b for r, b in zip(pair, before, strict=True)]
    assert sum(served) == 8 * 400
    # least_conn over 8 concurrent streams: each replica runs some; 2+ each leaves room for timing.
    assert min(served) >= 2 * 400, served
    upstreams = set(re.findall(r"/rnnserve.v1.Inference/Generate HTTP/2.0\" 200 grpc_status=0 upstream=(\S+)",
                               access_log.read_text()))
    assert upstreams == {r.target for r in pair}


def test_a_stream_session_may_send_more_in_all_than_one_request_may_be(balancer):
    """A ModelStreamInfer session is one HTTP/2 request whose body is all of its requests: nginx's
    client_max_body_size (4 MiB, for unary calls) ended such a session with INTERNAL once its requests added up to
    4 MiB. Each message is bounded by the replica instead."""
    target, *_ = balancer
    big = v2.ModelInferRequest(model_name="tiny-sentiment", inputs=[v2.ModelInferRequest.InferInputTensor(
        name="text", datatype="BYTES", shape=[1], contents=v2.InferTensorContents(bytes_contents=[b"x " * (1 << 19)]))])
    with grpc.insecure_channel(target) as channel:
        replies = list(v2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter([big] * 8), timeout=120))
    assert len(replies) == 8  # each answered (a text this long is refused in its reply; the session goes on)
    assert all("text" in r.error_message or r.error_message == "" for r in replies), replies[0].error_message


def test_health_is_answered_through_the_balancer(balancer):
    target, *_ = balancer
    assert health(target) == "SERVING"
    assert health(target, f"rnnserve.v1.Inference/{MODEL}") == "SERVING"
    with pytest.raises(grpc.RpcError) as err:
        health(target, "rnnserve.v1.Inference/no-such-model")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_stopped_replica_is_skipped(balancer):
    target, _, pair, *_ = balancer
    pair[1].stop()  # graceful: drains, then closes its port; nginx gets "connection refused" and tries the other
    before = chars(pair[0])
    t0 = time.monotonic()
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        results = [generate(stub, MODEL, 50, timeout=20) for _ in range(6)]
    assert [n for _, n in results] == [50] * 6
    assert chars(pair[0]) - before == 6 * 50
    assert time.monotonic() - t0 < 15


def _seconds(text: str, directive: str) -> float:
    (value,) = re.findall(rf"^\s*{directive} (\d+)s;", text, re.MULTILINE)
    return float(value)


def test_long_streams_are_not_cut_by_the_balancer():
    """Timeouts are the longest silence allowed: above the replicas' own limits, so theirs (and their status) come
    first. A client connection to nginx may hold 128 streams, more than compose's replicas' 32: nginx gives every
    call an upstream connection of its own."""
    text, s = (DEPLOY / "nginx" / "nginx.conf").read_text(), Settings()
    for directive in ("grpc_read_timeout", "grpc_send_timeout"):
        assert _seconds(text, directive) > max(s.max_request_s, s.session_idle_s), directive
    assert _seconds(text, "client_body_timeout") >= s.session_max_s
    (streams,) = re.findall(r"http2_max_concurrent_streams (\d+);", text)
    compose = (DEPLOY.parent / "docker-compose.yml").read_text()
    (replica_cap,) = re.findall(r"RNNSERVE_MAX_STREAMS_PER_CONNECTION:-(\d+)", compose)
    assert int(streams) == 128 == s.max_streams_per_connection > int(replica_cap)
    upstream_idle, client_idle = sorted(float(v) for v in re.findall(r"keepalive_timeout (\d+)s;", text))
    assert upstream_idle < s.connection_idle_s <= client_idle
    assert "least_conn;" in text and "http2" in text


def test_server_sent_events_pass_through_as_they_are_produced(balancer):
    """Events arrive one by one while the stream still runs (no buffering), and leaving frees the replica's slot."""
    target, _, pair, _, http = balancer
    fields = {"model": MODEL, "prompt": PROMPT, "max_tokens": 400, "seed": 1, "flush_chars": 8}
    with grpc.insecure_channel(target) as channel:
        text, _ = generate(pb_grpc.InferenceStub(channel), MODEL, 400, flush_chars=8)
    with event_stream(http, "/v1/generate", {**fields, "stream": True}) as (r, events):
        assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
        messages = [json.loads(data) for _, data in events]
    assert "".join(m["text"] for m in messages) == text and len(messages) >= 10

    def active() -> float:
        return sum(metric(p.metrics(), "rnnserve_active_streams", model=MODEL) for p in pair)
    with event_stream(http, "/v1/generate", {**fields, "max_tokens": 100_000, "stream": True}) as (_, events):
        next(events)
        assert active() == 1  # the first event came through while its stream runs on
    wait_until(lambda: active() == 0, 30, "the replica to free the slot of the stream whose client left")
