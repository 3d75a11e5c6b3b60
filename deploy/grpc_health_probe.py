"""Health probe over the standard gRPC health protocol (grpc.health.v1): exit 0 when SERVING, 1 otherwise.

python grpc_health_probe.py [--addr HOST:PORT] [--service NAME]; "" (the default) is the whole server,
"rnnserve.v1.Inference/<model>" one model. A stand-in for the grpc_health_probe binary.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", default=f"127.0.0.1:{os.environ.get('RNNSERVE_PORT', '50051')}")
    p.add_argument("--service", default="", help='health service name; "" = the whole server')
    p.add_argument("--timeout", type=float, default=3.0, help="seconds")
    a = p.parse_args(argv)
    with grpc.insecure_channel(a.addr) as channel:
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
