"""A ModelStreamInfer client that sends 1 MiB requests and never reads a reply: what the session holds, and what
is left after it goes."""

from __future__ import annotations

import argparse
import time

import grpc

from bench.hostile.measure import CLASSIFIER, report, sampled_rss
from bench.hostile.server import served
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc


def stream(args: argparse.Namespace) -> None:
    n, seconds = (200, 10) if args.quick else (2500, 30)
    big = v2.ModelInferRequest(model_name=CLASSIFIER, inputs=[v2.ModelInferRequest.InferInputTensor(
        name="text", datatype="BYTES", shape=[1], contents=v2.InferTensorContents(bytes_contents=[b"x" * (1 << 20)]))])
    # The client's receive window stays small (no BDP probing), as a client that reads nothing keeps it anyway.
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
    for limit, flags in (("off", ["--session-max-requests", "1000000", "--session-max-bytes", str(1 << 40),
                                  "--http2-bdp-probe", "1"]), ("on", [])):
        with served(args, flags) as site, grpc.insecure_channel(site.target, options=options) as channel:
            session = v2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer
            list(session(iter([big] * 8), timeout=600))  # a session read to its end first: what any session costs
            time.sleep(1)
            before, sent = site.server.status("VmRSS"), 0

            def requests():
                nonlocal sent
                for _ in range(n):
                    sent += 1
                    yield big

            call = session(requests(), timeout=600)
            held = sampled_rss(site.server, seconds)
            call.cancel()
            time.sleep(5)
            report("stream", limit, site.via, requests_sent=sent, of=n, rss_after_a_read_session_mb=round(before),
                   rss_held_mb=round(held), held_by_the_session_mb=round(held - before, 1),
                   rss_after_leaving_mb=round(site.server.status("VmRSS")), **site.server.summary())
