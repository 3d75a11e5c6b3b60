"""The HTTP listener: uvicorn serving the application on the server's own event loop, stopped with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

from service.settings import Settings

log = logging.getLogger("rnnserve")


class _Embedded(uvicorn.Server):
    """uvicorn without its signal handlers: the server's own (service/server.py) drain both protocols on SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket; "[::]" (the default) takes IPv4 and IPv6 clients alike."""
    address = host.strip("[]")
    try:
        if ":" in address:
            return socket.create_server((address, port), family=socket.AF_INET6, backlog=2048,
                                        dualstack_ipv6=address == "::" and socket.has_dualstack_ipv6())
        return socket.create_server((address, port), backlog=2048)
    except OSError as err:
        raise OSError(f"cannot listen on {host}:{port} for HTTP: {err.strerror}") from None


class HttpServer:
    """The HTTP port: started after gRPC, stopped after the drain, within what is left of the grace period."""

    def __init__(self, app: Starlette, settings: Settings) -> None:
        self.sock = _listen(settings.http_host, settings.http_port)
        self.port = self.sock.getsockname()[1]
        tls = bool(settings.tls_cert_file)
        self.server = _Embedded(uvicorn.Config(
            app, lifespan="off", log_config=None, access_log=False, server_header=False,
            http="httptools", limit_concurrency=settings.max_concurrent_rpcs,
            ssl_certfile=settings.tls_cert_file or None, ssl_keyfile=settings.tls_key_file or None,
            ssl_ca_certs=settings.tls_client_ca_file or None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if settings.tls_client_ca_file else ssl.CERT_NONE))
        self.task: asyncio.Task | None = None
        log.info("HTTP port %d: %s", self.port, "plain" if not tls else
                 "mutual TLS" if settings.tls_client_ca_file else "TLS")

    async def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started and not self.task.done():
            await asyncio.sleep(0.005)
        if self.task.done():
            self.task.result()  # start-up failed: raise why

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let requests in flight end for up to grace_s, then cancel what is left."""
        if self.task is None:
            return
        self.server.config.timeout_graceful_shutdown = max(grace_s, 0.0)
        self.server.should_exit = True
        await self.task
