"""A /metrics flood (128 scrapes a second) against Generate's median time: the scrape limits off and on."""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc

from bench.hostile.measure import OWN_CONNECTION, counts, report
from bench.hostile.server import served
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc

RATE = 128  # scrapes a second


def _scrape_flood(url: str, rate: float, stopping: threading.Event, results: list[str]) -> None:
    def one():
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                r.read()
                results.append(str(r.status))
        except urllib.error.HTTPError as err:
            results.append(str(err.code))
        except OSError:
            results.append("failed")

    with ThreadPoolExecutor(64) as pool:
        start, i = time.monotonic(), 0
        while not stopping.is_set():
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            pool.submit(one)
            i += 1


def _generate_p50(stub, request: pb.GenerateRequest, seconds: float) -> float:
    """Median time of whole Generate calls, one after another, for `seconds` (ms)."""
    times, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        list(stub.Generate(request, timeout=30))
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def scrapes(args: argparse.Namespace) -> None:
    seconds = 5 if args.quick else 20
    off = ["--metrics-cache-s", "0", "--metrics-max-per-s", "1000000", "--metrics-max-clients", "1000"]
    request = pb.GenerateRequest(model="shakespeare-lstm", prompt="ROMEO:", max_tokens=32, seed=1)
    for limit, flags in (("off", off), ("on", [])):
        with served(args, flags) as site, grpc.insecure_channel(site.target, options=OWN_CONNECTION) as ch:
            stub = pb_grpc.InferenceStub(ch)
            quiet = _generate_p50(stub, request, seconds)
            stopping, codes = threading.Event(), list[str]()
            flood = threading.Thread(target=_scrape_flood, args=(
                f"http://127.0.0.1:{site.server.metrics_port}/metrics", RATE, stopping, codes))
            flood.start()
            loud = _generate_p50(stub, request, seconds)
            stopping.set()
            flood.join()
            report("metrics", limit, site.via, scrapes_per_s=RATE, generate_p50_quiet_ms=round(quiet, 2),
                   generate_p50_flooded_ms=round(loud, 2), ratio=round(loud / quiet, 2), scrapes=counts(codes),
                   **site.server.summary())
