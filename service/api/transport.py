"""What one client may hold of the transport: streams per connection, connections, their idle time and age, and
Health/Watch streams; and the health port, a second listener that load on the gRPC port cannot starve.

gRPC core's names for these are channel arguments (include/grpc/impl/channel_arg_names.h). Without them one
connection could open 1,024 idle streams and take every slot of max_concurrent_rpcs (health checks included),
idle connections were never closed, and a rapid-reset flood on one connection made other clients' calls end
CANCELLED.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from service import metrics
from service.settings import Settings

WATCH = "/grpc.health.v1.Health/Watch"
HEALTH_CHECKS = 64  # Health/Check calls at once on the health port (each takes microseconds)


def options(settings: Settings) -> list[tuple[str, int]]:
    """Channel arguments that bound what a client connection holds (the keepalive ones are server.py's)."""
    return [
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),  # HTTP/2 SETTINGS: streams per connection
        ("grpc.max_allowed_incoming_connections", settings.max_connections),  # file descriptors are finite
        ("grpc.max_connection_idle_ms", ms(settings.connection_idle_s)),  # a connection without calls is closed
        ("grpc.max_connection_age_ms", ms(settings.connection_age_s)),  # then GOAWAY: clients reconnect (and rebalance)
        # ...and the calls running at GOAWAY may finish: the longest a call or a session may take.
        ("grpc.max_connection_age_grace_ms", ms(max(settings.max_request_s, settings.session_max_s))),
        ("grpc.server_handshake_timeout_ms", ms(settings.handshake_timeout_s)),  # TLS and HTTP/2 preface
        # A stream's receive window: what grpc buffers of requests its handler has not asked for yet (with BDP
        # probing, at least 4 MiB per stream under low memory pressure; without, 64 KiB plus the message being read).
        ("grpc.http2.bdp_probe", settings.http2_bdp_probe),
    ]


def ms(seconds: float) -> int:
    return round(seconds * 1000)


class WatchLimit(grpc.aio.ServerInterceptor):
    """At most max_open Health/Watch streams at once on a port: they need no token and last as long as the client
    likes, so without a cap of their own they could take every RPC slot. Beyond it: RESOURCE_EXHAUSTED."""

    def __init__(self, max_open: int) -> None:
        self.max_open, self.n_open = max_open, 0

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or details.method != WATCH:
            return handler
        watch: Any = handler.unary_stream  # grpc_health's aio Watch: a coroutine that writes with context.write

        async def capped(request: Any, context: grpc.aio.ServicerContext) -> None:
            if self.n_open >= self.max_open:
                metrics.count_refused("Watch", grpc.StatusCode.RESOURCE_EXHAUSTED.name)
                context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
                context.set_details(f"{self.n_open} Health/Watch streams are open (the limit, max_health_watches); "
                                    "use Health/Check")
                return
            self.n_open += 1
            metrics.HEALTH_WATCHES.inc()
            try:
                await watch(request, context)
            finally:
                self.n_open -= 1
                metrics.HEALTH_WATCHES.dec()

        return grpc.unary_stream_rpc_method_handler(capped, request_deserializer=handler.request_deserializer,
                                                    response_serializer=handler.response_serializer)


def health_server(servicer: health_pb2_grpc.HealthServicer, settings: Settings) -> tuple[grpc.aio.Server, int]:
    """The health service alone on settings.health_port, plain h2c (what kubelet's gRPC probe speaks), with its own
    RPC limit: probes answer while the gRPC port is full. It tells no more than the serving status."""
    server = grpc.aio.server(interceptors=[WatchLimit(settings.max_health_watches)],
                             maximum_concurrent_rpcs=settings.max_health_watches + HEALTH_CHECKS,
                             options=[("grpc.so_reuseport", 0), *options(settings)])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    address = f"{settings.host}:{settings.health_port}"
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address} (health_port)")
    return server, port
