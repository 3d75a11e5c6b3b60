"""Trace: what a client that reads nothing holds (after a first trace has loaded the version's tracer, a cost per
version), the CPU spent after a client left, and a sweep of lengths on every bundled LM (INTERNAL before)."""

from __future__ import annotations

import argparse
import time

import grpc

from bench.hostile.measure import LMS, code_of, counts, report, sampled_rss
from bench.hostile.server import ROOT, served
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc

MODEL = "shakespeare-lstm"


def _non_reader(args: argparse.Namespace, stub, site) -> None:
    chars = 1024 if args.quick else 4096
    columns = max(1, (1 << 20) // chars)  # max_trace_work's default
    request = pb.TraceRequest(model=MODEL, text="e" * chars, layers=[1], units=range(min(columns, 384)))
    before = site.server.status("VmRSS")
    list(stub.Trace(pb.TraceRequest(model=MODEL, text="e" * 200, layers=[1], units=[0]), timeout=600))
    time.sleep(1)
    warm = site.server.status("VmRSS")
    call = stub.Trace(request, timeout=600)
    held = sampled_rss(site.server, 5)
    call.cancel()
    call = stub.Trace(request, timeout=600)
    time.sleep(0.3)
    call.cancel()
    time.sleep(0.5)
    cpu0 = site.server.cpu_s()
    time.sleep(5)
    report("trace", "on", site.via, chars=chars, columns=len(request.units), rss_before_mb=round(before),
           first_trace_of_the_version_mb=round(warm - before, 1), held_by_a_non_reader_mb=round(held - warm, 1),
           cpu_s_in_5_s_after_client_left=round(site.server.cpu_s() - cpu0, 2), **site.server.summary())


def _sweep(args: argparse.Namespace, stub, site) -> None:
    lengths = [1, 2, 127, 128, 129, 255, 1000, *([] if args.quick else [2048, 4096])]
    play = (ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt").read_text()[:4096]
    texts = {"e": "e" * 4096, "space": " " * 4096, "cjk": "漢字テキスト" * 700, "play": play}
    codes = [code_of(stub.Trace, pb.TraceRequest(model=lm, text=text[:n], layers=[0], units=[0, 1]), timeout=600)
             for lm in LMS for text in texts.values() for n in lengths]
    report("trace sweep", "on", site.via, models=list(LMS), lengths=lengths, texts=list(texts), codes=counts(codes),
           **site.server.summary())


def trace(args: argparse.Namespace) -> None:
    with served(args, []) as site, grpc.insecure_channel(site.target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        _non_reader(args, stub, site)
        _sweep(args, stub, site)
