"""The transport's limits: one connection's streams cannot starve health or other clients, Health/Watch has its own
cap, the health port answers while the gRPC port is full, and idle connections are closed."""

from __future__ import annotations

import asyncio
import socket
import threading

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api import transport
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc
from service.settings import Settings
from tests.support.harness import pb, pb_grpc

OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # a channel that does not share another's connection
SERVING = health_pb2.HealthCheckResponse.SERVING


def test_every_transport_limit_is_a_setting_passed_to_grpc():
    s = Settings(max_streams_per_connection=7, max_connections=9, connection_idle_s=1.5, connection_age_s=60,
                 handshake_timeout_s=2, max_request_s=30, session_max_s=90)
    assert dict(transport.options(s)) == {
        "grpc.max_concurrent_streams": 7, "grpc.max_allowed_incoming_connections": 9,
        "grpc.max_connection_idle_ms": 1500, "grpc.max_connection_age_ms": 60_000,
        "grpc.max_connection_age_grace_ms": 90_000, "grpc.server_handshake_timeout_ms": 2000, "grpc.http2.bdp_probe": 0}


class Attacker:
    """n idle ModelStreamInfer streams (no request ever sent) on one connection, from its own thread and loop."""

    def __init__(self, target: str, n: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready, self.target, self.n = threading.Event(), target, n
        threading.Thread(target=self.loop.run_until_complete, args=(self._run(),), daemon=True).start()
        assert self.ready.wait(30)

    async def _run(self) -> None:
        self.stop = asyncio.Event()

        async def nothing():
            await self.stop.wait()
            yield v2.ModelInferRequest()

        async with grpc.aio.insecure_channel(self.target, options=OWN_CONNECTION) as channel:
            stub = v2_grpc.GRPCInferenceServiceStub(channel)
            calls = [stub.ModelStreamInfer(nothing()) for _ in range(self.n)]
            await asyncio.sleep(0)
            self.ready.set()
            await self.stop.wait()
            for call in calls:
                call.cancel()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)


def _check(target: str) -> int:
    with grpc.insecure_channel(target, options=OWN_CONNECTION) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status


def _classify(target: str) -> grpc.StatusCode:
    with grpc.insecure_channel(target, options=OWN_CONNECTION) as channel:
        try:
            pb_grpc.InferenceStub(channel).Classify(pb.ClassifyRequest(model="tiny-sentiment", texts=["fine"]), timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as err:
            return err.code()


def test_one_connection_with_many_streams_cannot_refuse_health_or_other_clients(serve):
    """Before the cap, 1,024 idle streams on one connection took every RPC slot: all calls got RESOURCE_EXHAUSTED."""
    running = serve(max_concurrent_rpcs=48, max_streams_per_connection=16)
    attacker = Attacker(f"localhost:{running.port}", 200)
    try:
        assert _check(f"localhost:{running.port}") == SERVING
        assert _check(f"localhost:{running.server.health_port}") == SERVING
        assert _classify(f"localhost:{running.port}") == grpc.StatusCode.OK
    finally:
        attacker.close()


def test_the_health_port_answers_while_the_grpc_port_is_full(serve):
    running = serve(max_concurrent_rpcs=32, max_streams_per_connection=16)
    attackers = [Attacker(f"localhost:{running.port}", 16) for _ in range(3)]  # 48 streams on 3 connections
    try:
        assert running.wait_for(lambda: _classify(f"localhost:{running.port}") == grpc.StatusCode.RESOURCE_EXHAUSTED, 30)
        assert _check(f"localhost:{running.server.health_port}") == SERVING
    finally:
        for a in attackers:
            a.close()


def test_health_watch_streams_have_their_own_cap(serve):
    running = serve(max_health_watches=3)
    with grpc.insecure_channel(f"localhost:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(3)]
        assert all(next(w).status == SERVING for w in watches)
        with pytest.raises(grpc.RpcError) as err:
            next(health.Watch(health_pb2.HealthCheckRequest(), timeout=60))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_health_watches" in err.value.details()
        assert running.metric("rnnserve_health_watches") == 3
        watches[0].cancel()
        assert running.wait_for(lambda: running.metric("rnnserve_health_watches") == 2)
        assert next(health.Watch(health_pb2.HealthCheckRequest(), timeout=60)).status == SERVING
        for w in watches[1:]:
            w.cancel()


def test_an_idle_connection_is_closed(serve):
    running = serve(connection_idle_s=0.5)
    states = []
    with grpc.insecure_channel(f"localhost:{running.port}", options=OWN_CONNECTION) as channel:
        channel.subscribe(states.append)
        pb_grpc.InferenceStub(channel).ListModels(pb.ListModelsRequest(), timeout=10)
        # The server's GOAWAY after 0.5 s without calls sends the channel back to IDLE.
        assert running.wait_for(lambda: grpc.ChannelConnectivity.READY in states and
                                states[-1] == grpc.ChannelConnectivity.IDLE, 30), states


def test_connections_beyond_max_connections_are_refused(serve):
    running = serve(max_connections=2)
    # One address: the limit is per listening socket, and "localhost" is two of them (IPv4 and IPv6).
    channels = [grpc.insecure_channel(f"127.0.0.1:{running.port}", options=OWN_CONNECTION) for _ in range(3)]
    try:
        codes = []
        for channel in channels:
            try:
                pb_grpc.InferenceStub(channel).ListModels(pb.ListModelsRequest(), timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.append(err.code())
        assert codes == [grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE]
    finally:
        for channel in channels:
            channel.close()


def test_a_connection_may_hold_128_streams_by_default(serve):
    """What the server announces in its HTTP/2 SETTINGS: nginx's default, so a client that keeps many calls in
    flight on one channel is not refused (grpc refuses the calls beyond the cap). A replica exposed to untrusted
    clients can lower it: at 32 a rapid-reset flood took other clients' p99 to ~2.5x its quiet value, at 128 to
    ~7x (bench/hostile/reset.py)."""
    running = serve(max_streams_per_connection=Settings().max_streams_per_connection)  # the harness raises it
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        while not any(isinstance(e, h2.events.RemoteSettingsChanged) for e in conn.receive_data(sock.recv(1 << 16))):
            pass
    assert conn.remote_settings.max_concurrent_streams == Settings().max_streams_per_connection == 128


def _codes(calls) -> list[grpc.StatusCode]:
    codes = []
    for call in calls:
        try:
            call.result()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as err:
            codes.append(err.code())
    return codes


def test_calls_beyond_a_connections_streams_are_refused_unavailable_and_more_connections_carry_them(serve):
    """grpc counts a stream against the cap until the server has let go of it (its rapid-reset defence, overload
    protection), so a client that keeps more calls in flight on one connection gets the excess refused
    (UNAVAILABLE, safe to retry: the call never started); spread over connections they all succeed."""
    running = serve(max_streams_per_connection=4)
    request = pb.ClassifyRequest(model="tiny-sentiment", texts=["fine"])
    with grpc.insecure_channel(f"localhost:{running.port}", options=OWN_CONNECTION) as channel:
        stub = pb_grpc.InferenceStub(channel)
        codes = _codes([stub.Classify.future(request, timeout=60) for _ in range(40)])
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE} and codes.count(grpc.StatusCode.OK) >= 4
    channels = [grpc.insecure_channel(f"localhost:{running.port}", options=OWN_CONNECTION) for _ in range(10)]
    try:
        calls = [pb_grpc.InferenceStub(ch).Classify.future(request, timeout=60) for ch in channels for _ in range(4)]
        assert _codes(calls) == [grpc.StatusCode.OK] * 40
    finally:
        for ch in channels:
            ch.close()
