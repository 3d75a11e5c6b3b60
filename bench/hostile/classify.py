"""The worst valid Classify (64 texts of 8,192 tokens grew ONNX Runtime's arena ~4.6 KB per token), alone and 16
at once, against the memory limit."""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor

import grpc

from bench.hostile.measure import CLASSIFIER, code_of, counts, report
from bench.hostile.server import served
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc


def classify(args: argparse.Namespace) -> None:
    n, tokens = (64, 1024) if args.quick else (64, 8192)
    texts = [("fun " if i % 2 else "dull ") + "!" * (tokens - 5 - i) for i in range(n)]
    worst = pb.ClassifyRequest(model=CLASSIFIER, texts=texts)
    off = ["--max-classify-tokens", str(n * tokens), "--classify-max-batch-tokens", str(n * tokens)]
    budgeted = ["--max-classify-tokens", str(n * tokens)]  # the same request admitted, run in budgeted calls
    for limit, flags in (("off", off), ("on, request admitted", budgeted), ("on", [])):
        with served(args, flags) as site, grpc.insecure_channel(site.target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            alone = code_of(stub.Classify, worst, timeout=600)
            with ThreadPoolExecutor(16) as pool:
                crowd = [f.result() for f in [pool.submit(code_of, stub.Classify, worst, timeout=900) for _ in range(16)]]
            report("classify", limit, site.via, request=f"{n} x {tokens} tokens", alone=alone, sixteen=counts(crowd),
                   limit_mb=args.memory_limit_mb, **site.server.summary())
