"""Assembles the server: repository, one engine per model, servicer, health, reflection, /metrics, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service import metrics
from service.api import security
from service.api.admin import AdminServicer
from service.api.http.app import create_app
from service.api.http.serve import HttpServer
from service.api.native import InferenceServicer
from service.api.undecodable import RefuseUndecodable
from service.api.v2 import GRPCInferenceServicer
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from service.models.host import ModelHost
from service.models.reload import Reloader
from service.models.repository import Repository
from service.settings import Settings

log = logging.getLogger("rnnserve")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name
ADMIN_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Admin"].full_name
V2_SERVICE_NAME = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name  # Open Inference Protocol
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
# grpc.stop(0) cancels every call in flight, a refusal about to send UNAVAILABLE included. This much
# grace lets such quick answers go out. A call grpc core has not yet handed to a handler when the stop
# starts still ends CANCELLED: grpc/grpc#41785, see docs/reliability.md.
STOP_FLOOR_S = 0.25


def health_name(model: str) -> str:
    """The health service name of one model (any loaded version)."""
    return f"{SERVICE_NAME}/{model}"


def _keepalive(keepalive_s: float) -> list[tuple[str, int]]:
    """HTTP/2 pings on connections with calls: a client whose host vanished without closing (no FIN, no RST)
    leaves its streams running and their text piling up until grpc sees it gone; only an unanswered ping does."""
    ms = round(keepalive_s * 1000)
    return [("grpc.keepalive_time_ms", ms), ("grpc.keepalive_timeout_ms", ms),
            ("grpc.http2.ping_timeout_ms", ms),  # in current gRPC core this one decides: its default is 60 s
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 0)]  # a stalled stream sends no data: keep pinging anyway


class Server:
    """A running rnnserve: the grpc.aio server plus what must be stopped with it."""

    def __init__(self, settings: Settings, repo: Repository) -> None:
        self.settings = settings
        self.host = ModelHost(repo, settings, asyncio.get_running_loop())
        self.reloader = Reloader(settings.model_dir, self.host, self._publish, settings.intra_op_threads,
                                 settings.inter_op_threads)
        self.health = health.aio.HealthServicer()
        auth = security.interceptors(settings)
        self.grpc = grpc.aio.server(
            interceptors=[*auth, RefuseUndecodable()],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
                     ("grpc.max_send_message_length", settings.max_send_message_bytes), *_keepalive(settings.keepalive_s)])
        native, v2_servicer = InferenceServicer(self.host), GRPCInferenceServicer(self.host)
        pb_grpc.add_InferenceServicer_to_server(native, self.grpc)
        v2_grpc.add_GRPCInferenceServiceServicer_to_server(v2_servicer, self.grpc)
        pb_grpc.add_AdminServicer_to_server(AdminServicer(self.host, self.reloader), self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection((SERVICE_NAME, V2_SERVICE_NAME, ADMIN_SERVICE_NAME,
                                             health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                             reflection.SERVICE_NAME), self.grpc)
        self.port = security.bind(self.grpc, settings)
        self.http, self.http_port = None, -1  # REST, server-sent events and the playground, over the same servicers
        if settings.http_port >= 0:
            self.http = HttpServer(create_app(native, v2_servicer, settings, next(iter(auth), None)), settings)
            self.http_port = self.http.port
        self.metrics_httpd, self.metrics_port = None, -1
        if settings.metrics_port >= 0:
            self.metrics_httpd, self.metrics_port = metrics.serve(settings.metrics_host, settings.metrics_port)
        self.health_names: set[str] = set()  # models whose health status has been published
        self.poller: asyncio.Task | None = None
        self.stopped = asyncio.Event()

    async def _publish(self) -> None:
        """Health and rnnserve_model_info follow the served set: at start and after every reload that changed it."""
        metrics.set_models((m.name, m.version, m.kind, m.meta.cell) for m in self.host.repo.all())
        for name in self.health_names - set(self.host.repo.models):
            await self.health.set(health_name(name), NOT_SERVING)
        for name in self.host.repo.models:
            await self.health.set(health_name(name), SERVING)
        self.health_names |= set(self.host.repo.models)

    async def start(self) -> None:
        await self.grpc.start()
        if self.http is not None:
            await self.http.start()
        await self._publish()
        await self.health.set(SERVICE_NAME, SERVING)
        if self.settings.poll_s > 0:
            self.poller = asyncio.get_running_loop().create_task(self.reloader.poll(self.settings.poll_s))
        log.info("serving %d model version(s) on port %d, HTTP on port %d, metrics on port %d",
                 len(self.host.repo.all()), self.port, self.http_port, self.metrics_port)

    def open_requests(self) -> int:
        """Requests still running on any engine, retiring ones included: shutdown lets them finish."""
        return self.host.n_open + self.reloader.n_open

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Health goes NOT_SERVING, new requests get UNAVAILABLE, running streams finish (up to grace_s), then stop."""
        if self.host.draining:
            return await self.stopped.wait()
        grace_s = self.settings.grace_s if grace_s is None else grace_s
        log.info("shutting down: draining %d request(s) for up to %.1f s", self.open_requests(), grace_s)
        self.host.draining = True
        if self.poller is not None:
            self.poller.cancel()
        await self.health.enter_graceful_shutdown()
        deadline = time.monotonic() + grace_s
        while self.open_requests() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        last_s = max(STOP_FLOOR_S, min(1.0, deadline - time.monotonic()))
        await asyncio.gather(self.grpc.stop(last_s), self.http.stop(last_s) if self.http is not None else asyncio.sleep(0))
        async with self.reloader.lock:  # a reload in progress finishes its swap first
            await self.host.close()
            await self.reloader.close()
        if self.metrics_httpd is not None:
            await asyncio.to_thread(self.metrics_httpd.shutdown)
            self.metrics_httpd.server_close()
        log.info("stopped")
        self.stopped.set()

    def handle_signals(self) -> None:
        """SIGTERM / SIGINT start a graceful shutdown (a second one is ignored while draining)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self.shutdown()))


async def create_server(settings: Settings, repo: Repository | None = None) -> tuple[Server, int]:
    """Load the repository (unless given), build and start the server; returns it and its bound gRPC port."""
    if repo is None:
        repo = Repository.load(settings.model_dir, settings.intra_op_threads, settings.inter_op_threads)
    server = Server(settings, repo)
    await server.start()
    return server, server.port
