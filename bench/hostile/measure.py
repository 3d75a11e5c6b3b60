"""What every attack reports: status codes, open-loop latencies, RSS sampled while an attack holds memory, CPU."""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from bench.hostile.server import Server, cpu_s
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb

CLASSIFIER, LMS = "sst2-bilstm", ("shakespeare-lstm", "python-lstm", "shakespeare-gru")
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # a channel of its own: not the attacker's connection


def code_of(call, *args, **kwargs) -> str:
    """The status code name of call(*args, **kwargs), read to its end when it streams."""
    try:
        reply = call(*args, **kwargs)
        if hasattr(reply, "__next__"):
            list(reply)
        return "OK"
    except grpc.RpcError as err:
        return err.code().name


def counts(codes: list[str]) -> dict[str, int]:
    return {c: codes.count(c) for c in sorted(set(codes))}


def report(attack: str, limit: str, via: str, **figures) -> None:
    print(json.dumps({"attack": attack, "limit": limit, "via": via, **figures}), flush=True)


def sampled_rss(server: Server, seconds: float) -> float:
    """The highest VmRSS seen over `seconds`, sampled every 0.25 s (MB)."""
    peak, end = 0.0, time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, server.status("VmRSS"))
        time.sleep(0.25)
    return peak


def latencies(stub, seconds: float, rate: float) -> tuple[list[float], list[str]]:
    """Classify calls at a fixed rate (open loop) for `seconds`: latencies of the OK ones (ms), every code."""
    request, lat, codes = pb.ClassifyRequest(model=CLASSIFIER, texts=["a fine film"]), [], []

    def one():
        t0 = time.perf_counter()
        try:
            stub.Classify(request, timeout=10)
            lat.append(1000 * (time.perf_counter() - t0))
            codes.append("OK")
        except grpc.RpcError as err:
            codes.append(err.code().name)

    with ThreadPoolExecutor(32) as pool:
        start = time.monotonic()
        for i in range(int(seconds * rate)):
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            pool.submit(one)
    return lat, codes


def percentile(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100)[q - 1], 2) if len(values) >= 2 else float("nan")


def tree_cpu_s(pid: int) -> float:
    """CPU of a process and its live children (nginx's master and its worker)."""
    total = cpu_s(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / 100
    return total
