"""Health probe over the standard gRPC health protocol (grpc.health.v1): exit 0 when SERVING, 1 otherwise.

python grpc_health_probe.py [--addr HOST:PORT] [--service NAME]; "" (the default) is the whole server,
"rnnserve.v1.Inference/<model>" one model. A stand-in for the grpc_health_probe binary. By default it asks the
server's health port (RNNSERVE_HEALTH_PORT, 50052): plain h2c, with its own limits, so a full gRPC port
cannot make the probe fail.

On the gRPC port (--addr 127.0.0.1:50051) a server with TLS needs --tls-ca (and --tls-cert/--tls-key with
mutual TLS); --server-name names the certificate's host when the probe dials 127.0.0.1. Health needs no
bearer token.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _channel(a: argparse.Namespace) -> grpc.Channel:
    if not a.tls_ca:
        return grpc.insecure_channel(a.addr)

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(read(a.tls_ca), read(a.tls_key), read(a.tls_cert))
    options = [("grpc.ssl_target_name_override", a.server_name)] if a.server_name else []
    return grpc.secure_channel(a.addr, credentials, options)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", default=f"127.0.0.1:{os.environ.get('RNNSERVE_HEALTH_PORT', '50052')}")
    p.add_argument("--service", default="", help='health service name; "" = the whole server')
    p.add_argument("--timeout", type=float, default=3.0, help="seconds")
    p.add_argument("--tls-ca", metavar="PEM", help="speak TLS, trusting this CA bundle")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS), with --tls-key")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    p.add_argument("--server-name", help="the host name the server's certificate is for (default: from --addr)")
    a = p.parse_args(argv)
    with _channel(a) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=a.service),
                                                              timeout=a.timeout)
        except grpc.RpcError as err:
            print(f"{a.addr} {a.service!r}: {err.code().name} {err.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{a.addr} {a.service!r}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
