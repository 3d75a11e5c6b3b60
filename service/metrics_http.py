"""HTTP /metrics for Prometheus, on the server's event loop: rendered at most once per cache_s, scrapes rate-limited,
a few connections at a time, each with a deadline, so that scrapes cannot slow inference or pile up.

prometheus_client's own server starts a thread per request and renders every scrape: a flood of 128 scrapes
a second took Generate's p50 from 8 to 206 ms, and slow scrapers piled up threads until a real scrape timed out.
Here a scrape beyond the rate gets 429, a connection beyond max_clients is closed at once, and one that has not
sent its request and read the reply within timeout_s is dropped. Rendering runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import gzip
import time

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.registry import CollectorRegistry

from service import metrics

MAX_REQUEST_HEAD = 8192  # bytes of request line and headers; Prometheus sends a few hundred


class TokenBucket:
    """At most `rate` events a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, burst, burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Exposition:
    """The registry's text exposition (plain and gzipped), rendered again only once it is cache_s old."""

    def __init__(self, registry: CollectorRegistry, cache_s: float) -> None:
        self.registry, self.cache_s = registry, cache_s
        self.rendered: tuple[bytes, bytes] | None = None
        self.at = 0.0
        self.rendering: asyncio.Future[tuple[bytes, bytes]] | None = None  # scrapes meanwhile share it

    def _render(self) -> tuple[bytes, bytes]:
        text = generate_latest(self.registry)
        return text, gzip.compress(text, compresslevel=1)

    async def get(self) -> tuple[bytes, bytes]:
        if self.rendered is not None and time.monotonic() - self.at < self.cache_s:
            return self.rendered
        if self.rendering is None:
            self.rendering = asyncio.ensure_future(asyncio.to_thread(self._render))
        rendering = self.rendering
        try:
            rendered = await asyncio.shield(rendering)
        finally:
            if self.rendering is rendering and rendering.done():
                self.rendering = None
        self.rendered, self.at = rendered, time.monotonic()
        return rendered


def _response(status: str, headers: dict[str, str], body: bytes = b"", head_only: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in {**headers, "Content-Length": str(len(body)),
                                                                 "Connection": "close"}.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


class MetricsEndpoint:
    """GET /metrics (and /) on host:port; start() returns the bound port."""

    def __init__(self, host: str, port: int, cache_s: float, max_per_s: float, max_clients: int, timeout_s: float,
                 registry: CollectorRegistry = REGISTRY) -> None:
        self.host, self.port, self.max_clients, self.timeout_s = host, port, max_clients, timeout_s
        self.exposition = Exposition(registry, cache_s)
        self.bucket = TokenBucket(max_per_s, max(1.0, max_per_s))
        self.clients = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_REQUEST_HEAD,
                                                 reuse_address=True)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.clients >= self.max_clients:
            metrics.count_scrape("dropped")
            writer.transport.abort()
            return
        self.clients += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                writer.write(await self._answer(await reader.readuntil(b"\r\n\r\n")))
                writer.close()  # one request per connection: the reply is flushed, then the connection closed
                await writer.wait_closed()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            metrics.count_scrape("failed")
        finally:
            self.clients -= 1
            writer.transport.abort()  # a no-op once closed; drops a client too slow to take its reply in time

    async def _answer(self, head: bytes) -> bytes:
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, *_ = [*request_line.split(" "), "", ""]
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines if line)}
        if path.split("?")[0] not in ("/metrics", "/"):
            metrics.count_scrape("not_found")
            return _response("404 Not Found", {"Content-Type": "text/plain"}, b"only /metrics is served here\n")
        if method not in ("GET", "HEAD"):
            metrics.count_scrape("not_found")
            return _response("405 Method Not Allowed", {"Allow": "GET, HEAD"})
        if not self.bucket.take():
            metrics.count_scrape("limited")
            return _response("429 Too Many Requests", {"Retry-After": "1", "Content-Type": "text/plain"},
                             b"too many scrapes; see metrics_max_per_s\n")
        text, gzipped = await self.exposition.get()
        metrics.count_scrape("ok")
        if "gzip" in headers.get("accept-encoding", "").lower():
            return _response("200 OK", {"Content-Type": CONTENT_TYPE_LATEST, "Content-Encoding": "gzip"}, gzipped,
                             method == "HEAD")
        return _response("200 OK", {"Content-Type": CONTENT_TYPE_LATEST}, text, method == "HEAD")
