"""One connection with 1,024 idle streams (ModelStreamInfer, or Health/Watch): can health, and another client,
still get an answer?"""

from __future__ import annotations

import argparse
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.hostile.measure import CLASSIFIER, OWN_CONNECTION, counts, report
from bench.hostile.raw_h2 import IdleStreams
from bench.hostile.server import served
from bench.rapid_reset import grpc_frame
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc

KINDS = {  # path, what each stream sends (None: nothing, the stream stays open for requests that never come)
    "ModelStreamInfer": ("/inference.GRPCInferenceService/ModelStreamInfer", None),
    "Health/Watch": ("/grpc.health.v1.Health/Watch", grpc_frame(health_pb2.HealthCheckRequest().SerializeToString())),
}


def _health(address: str) -> str:
    with grpc.insecure_channel(address, options=OWN_CONNECTION) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as err:
            return err.code().name


def _classify_ten(address: str) -> dict[str, int]:
    codes = []
    with grpc.insecure_channel(address, options=OWN_CONNECTION) as ch:
        for _ in range(10):
            try:
                pb_grpc.InferenceStub(ch).Classify(pb.ClassifyRequest(model=CLASSIFIER, texts=["fine"]), timeout=5)
                codes.append("OK")
            except grpc.RpcError as err:
                codes.append(err.code().name)
    return counts(codes)


def streams(args: argparse.Namespace) -> None:
    n, seconds = (256, 3) if args.quick else (1024, 10)
    rpcs = ["--max-concurrent-rpcs", str(n)]  # as many RPC slots as the attacker opens streams (1,024 by default)
    off = ["--max-streams-per-connection", "100000", "--max-health-watches", "100000", *rpcs]
    for kind, (path, body) in KINDS.items():
        for limit, flags in (("off", off), ("on", rpcs)):
            with served(args, flags) as site:
                host, port = site.target.rsplit(":", 1)
                attacker = IdleStreams(host, int(port), path, n, body)
                try:
                    time.sleep(seconds)
                    outcome = {"health_on_grpc_port": _health(site.target),
                               "health_on_health_port": _health(f"127.0.0.1:{site.server.health_port}"),
                               "other_client_classify": _classify_ten(site.target),
                               "attacker_streams_refused": attacker.refused,
                               "attacker_connection_closed": attacker.closed_by_server}
                finally:
                    attacker.close()
                report("streams", limit, site.via, kind=kind, streams=n, **outcome, **site.server.summary())
