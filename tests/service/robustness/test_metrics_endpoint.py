"""/metrics under abuse: loopback by default, one rendering per metrics_cache_s, a rate limit, and slow clients
dropped so that a real scrape still gets through."""

from __future__ import annotations

import gzip
import socket
import urllib.error
import urllib.request

import pytest

from service.metrics import SCRAPES
from service.settings import Settings
from tests.support.harness import pb


def _get(port: int, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://localhost:{port}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_metrics_listen_on_loopback_unless_told_otherwise():
    assert Settings().metrics_host == "127.0.0.1"


def test_the_endpoint_binds_the_configured_address(serve):
    running = serve(metrics_host="127.0.0.1")
    assert running.server.metrics.server.sockets[0].getsockname()[0] == "127.0.0.1"


def test_scrapes_beyond_the_rate_get_429(serve):
    running = serve(metrics_max_per_s=0.001)  # one scrape, then one every 1,000 s
    limited = SCRAPES.labels("limited")._value.get()
    codes = [_get(running.server.metrics_port)[0] for _ in range(5)]
    assert codes == [200, 429, 429, 429, 429]
    assert SCRAPES.labels("limited")._value.get() - limited == 4


def test_a_scrape_within_the_cache_interval_gets_the_same_text(serve):
    running = serve(metrics_cache_s=3600)
    _, _, first = _get(running.server.metrics_port)
    running.stub.Classify(pb.ClassifyRequest(model="tiny-sentiment", texts=["fine"]), timeout=30)
    status, headers, second = _get(running.server.metrics_port, **{"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(second) == first and b"rnnserve_requests_total" in first


def _silent_client(port: int) -> socket.socket:
    """Connects and sends nothing, as a slow (or hostile) scraper does."""
    return socket.create_connection(("localhost", port), timeout=30)


def _closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_slow_clients_are_dropped_and_a_real_scrape_then_gets_through(serve):
    running = serve(metrics_max_clients=2, metrics_timeout_s=1.0)
    port = running.server.metrics_port
    slow = [_silent_client(port) for _ in range(2)]
    try:
        assert running.wait_for(lambda: running.server.metrics.clients == 2)
        with _silent_client(port) as third:  # over metrics_max_clients: closed at once
            assert _closed_by_server(third)
        for s in slow:  # each dropped after metrics_timeout_s without a request
            assert _closed_by_server(s)
        assert _get(port)[0] == 200
    finally:
        for s in slow:
            s.close()


@pytest.mark.parametrize(("path", "code"), [("/", 200), ("/nope", 404)])
def test_only_metrics_is_served(serve, path, code):
    running = serve()
    try:
        with urllib.request.urlopen(f"http://localhost:{running.server.metrics_port}{path}", timeout=10) as r:
            assert r.status == code
    except urllib.error.HTTPError as err:
        assert err.code == code
