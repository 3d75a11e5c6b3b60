"""Hostile clients below the API (issue 17), against a real server process on 127.0.0.1: each attack with the
limit that stops it loosened ("off": the server as it was before the limit) and with the shipped defaults ("on").

    python -m bench.hostile                                  # every attack (about 15 minutes, on a quiet machine)
    python -m bench.hostile --quick                          # small counts and times: checks that it runs
    python -m bench.hostile --attacks streams,reset --through-nginx   # through deploy/nginx/nginx.conf too

One JSON line per run. With a memory cgroup (cgroups v1, as root) each server runs under --memory-limit-mb
(1024, as deploy/ sets it) from its first byte, so a run can end "killed"; peak_rss_mb is the process's
VmHWM. Attacks: classify (the worst valid Classify, alone and 16 at once), stream (a ModelStreamInfer
client that never reads), streams (1,024 idle streams on one connection), reset (rapid reset), trace
(a client that leaves, and a sweep of lengths on every bundled LM), metrics (a scrape flood).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.failover import NGINX_CONF, free_port, nginx_config, wait_serving
from bench.rapid_reset import Flood, grpc_frame
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIER, LMS = "sst2-bilstm", ("shakespeare-lstm", "python-lstm", "shakespeare-gru")
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2"}  # as the image
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # a channel of its own: not the attacker's connection


class Server:
    """python -m service on free ports, in a memory cgroup of memory_mb when one can be made."""

    def __init__(self, model_dir: str, flags: list[str], memory_mb: int) -> None:
        self.group = _cgroup(memory_mb)
        procs = None if self.group is None else str(self.group / "cgroup.procs")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--model-dir", model_dir, "--host", "127.0.0.1", "--port", "0",
             "--health-port", "0", "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--http-port", "-1",
             "--intra-op-threads", "1", *flags],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **MALLOC},
            preexec_fn=None if procs is None else lambda: Path(procs).write_text("0"))
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()
        try:
            self.port, self.metrics_port, self.health_port = self._ports()
            self.target = f"127.0.0.1:{self.port}"
            wait_serving(self.target, 120, self.proc)
        except BaseException:
            self.close()
            raise

    def _ports(self) -> tuple[int, int, int]:
        end = time.monotonic() + 120
        while time.monotonic() < end and self.proc.poll() is None:
            for line in list(self.log):
                if m := re.search(r"on port (\d+), HTTP on port -?\d+, metrics on port (-?\d+), health on port (-?\d+)",
                                  line):
                    return int(m[1]), int(m[2]), int(m[3])
            time.sleep(0.1)
        raise RuntimeError(f"the server did not start: {''.join(self.log)[-2000:]}")

    def status(self, key: str) -> float:
        """VmRSS / VmHWM in MB, or 0 once the process is gone."""
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        return int(re.search(rf"{key}:\s+(\d+)", text)[1]) / 1024

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 10 ms

    def summary(self) -> dict:
        return {"alive": self.proc.poll() is None, "killed": self.proc.returncode == -9,
                "peak_rss_mb": round(self.status("VmHWM")), "rss_mb": round(self.status("VmRSS")),
                "errors_logged": sum("ERROR" in line for line in self.log)}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        if self.group is not None:
            time.sleep(0.2)
            self.group.rmdir()


def _cgroup(memory_mb: int) -> Path | None:
    try:
        own = next(line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                   if line.split(":")[1] == "memory")
        group = Path("/sys/fs/cgroup/memory") / own.lstrip("/") / f"rnnserve-hostile-{time.monotonic_ns()}"
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(memory_mb << 20))
        return group
    except (OSError, StopIteration, IndexError):
        return None


@contextmanager
def served(args: argparse.Namespace, flags: list[str]):
    """(server, the address clients use): the server's own, or nginx's in front of it with --through-nginx."""
    server = Server(args.model_dir, flags, args.memory_limit_mb)
    try:
        if not args.through_nginx:
            yield server, server.target
            return
        with tempfile.TemporaryDirectory() as tmp:
            port, status = free_port(), free_port()
            conf = nginx_config(NGINX_CONF, Path(tmp), [server.target], port, status)
            nginx = subprocess.Popen(["nginx", "-p", tmp, "-e", f"{tmp}/error.log", "-c", str(conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_serving(f"127.0.0.1:{port}", 30, nginx)
                yield server, f"127.0.0.1:{port}"
            finally:
                nginx.terminate()
                nginx.wait(15)
    finally:
        server.close()


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


def report(attack: str, limit: str, **figures) -> None:
    print(json.dumps({"attack": attack, "limit": limit, **figures}), flush=True)


def classify(args: argparse.Namespace) -> None:
    """One valid Classify that grew ONNX Runtime's arena by ~4.5 KB per token, then 16 such at once."""
    n, tokens = (64, 1024) if args.quick else (64, 8192)
    texts = [("fun " if i % 2 else "dull ") + "!" * (tokens - 5 - i) for i in range(n)]
    worst = pb.ClassifyRequest(model=CLASSIFIER, texts=texts)
    off = ["--max-classify-tokens", str(n * tokens), "--classify-max-batch-tokens", str(n * tokens)]
    budgeted = ["--max-classify-tokens", str(n * tokens)]  # the same request admitted, run in budgeted calls
    for limit, flags in (("off", off), ("on, request admitted", budgeted), ("on", [])):
        with served(args, flags) as (server, target), grpc.insecure_channel(target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            alone = code_of(stub.Classify, worst, timeout=600)
            with ThreadPoolExecutor(16) as pool:
                crowd = [f.result() for f in [pool.submit(code_of, stub.Classify, worst, timeout=900) for _ in range(16)]]
            report("classify", limit, request=f"{n} x {tokens} tokens", alone=alone, sixteen=counts(crowd),
                   limit_mb=args.memory_limit_mb, **server.summary())


def _sampled_rss(server: Server, seconds: float) -> float:
    peak, end = 0.0, time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, server.status("VmRSS"))
        time.sleep(0.25)
    return peak


def stream(args: argparse.Namespace) -> None:
    """A ModelStreamInfer client that sends 1 MiB requests and never reads a reply."""
    n, seconds = (200, 10) if args.quick else (2500, 30)
    big = v2.ModelInferRequest(model_name=CLASSIFIER, inputs=[v2.ModelInferRequest.InferInputTensor(
        name="text", datatype="BYTES", shape=[1], contents=v2.InferTensorContents(bytes_contents=[b"x" * (1 << 20)]))])
    # The client's receive window stays small (no BDP probing), as a client that reads nothing keeps it anyway.
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
    for limit, flags in (("off", ["--session-max-requests", "1000000"]), ("on", [])):
        with served(args, flags) as (server, target), grpc.insecure_channel(target, options=options) as channel:
            before, sent = server.status("VmRSS"), 0

            def requests():
                nonlocal sent
                for _ in range(n):
                    sent += 1
                    yield big

            call = v2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests(), timeout=600)
            held = _sampled_rss(server, seconds)
            call.cancel()
            time.sleep(5)
            report("stream", limit, requests_sent=sent, of=n, rss_before_mb=round(before), rss_held_mb=round(held),
                   rss_after_leaving_mb=round(server.status("VmRSS")), **server.summary())


async def _idle_streams(target: str, kind: str, n: int, seconds: float, health_target: str) -> dict:
    """n idle streams of `kind` on one connection; meanwhile what health and another client get."""
    forever = asyncio.Event()

    async def nothing():
        await forever.wait()
        yield v2.ModelInferRequest()

    async with grpc.aio.insecure_channel(target) as attacker:
        if kind == "ModelStreamInfer":
            calls = [v2_grpc.GRPCInferenceServiceStub(attacker).ModelStreamInfer(nothing()) for _ in range(n)]
        else:
            calls = [health_pb2_grpc.HealthStub(attacker).Watch(health_pb2.HealthCheckRequest()) for _ in range(n)]
        await asyncio.sleep(seconds)
        outcome = {}
        for name, address in (("health_on_grpc_port", target), ("health_on_health_port", health_target)):
            async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as ch:
                try:
                    r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
                    outcome[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
                except grpc.RpcError as err:
                    outcome[name] = err.code().name
        async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as ch:
            codes = []
            for _ in range(10):
                try:
                    await pb_grpc.InferenceStub(ch).Classify(pb.ClassifyRequest(model=CLASSIFIER, texts=["fine"]), timeout=5)
                    codes.append("OK")
                except grpc.RpcError as err:
                    codes.append(err.code().name)
            outcome["other_client_classify"] = counts(codes)
        refused = [await c.code() for c in calls if c.done()]
        outcome["attacker_streams_refused"] = sum(code != grpc.StatusCode.OK for code in refused)
        for c in calls:
            c.cancel()
    return outcome


def streams(args: argparse.Namespace) -> None:
    n = 256 if args.quick else 1024
    rpcs = ["--max-concurrent-rpcs", str(n)]  # as many RPC slots as the attacker opens streams (1,024 by default)
    off = ["--max-streams-per-connection", "100000", "--max-health-watches", "100000", *rpcs]
    for kind in ("ModelStreamInfer", "Health/Watch"):
        for limit, flags in (("off", off), ("on", rpcs)):
            with served(args, flags) as (server, target):
                outcome = asyncio.run(_idle_streams(target, kind, n, 3 if args.quick else 10,
                                                    f"127.0.0.1:{server.health_port}"))
                report("streams", limit, kind=kind, streams=n, **outcome, **server.summary())


def _latencies(stub, seconds: float, rate: float) -> tuple[list[float], list[str]]:
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


def _p(values: list[float], q: float) -> float:
    return round(statistics.quantiles(values, n=100)[q - 1], 2) if len(values) >= 2 else float("nan")


def reset(args: argparse.Namespace) -> None:
    seconds = 5 if args.quick else 20
    body = grpc_frame(pb.ClassifyRequest(model=CLASSIFIER, texts=["a fine film"]).SerializeToString())
    for limit, flags in (("off", ["--max-streams-per-connection", "100000"]), ("on", [])):
        with served(args, flags) as (server, target), grpc.insecure_channel(target, options=OWN_CONNECTION) as ch:
            stub = pb_grpc.InferenceStub(ch)
            quiet, quiet_codes = _latencies(stub, seconds, 20)
            host, port = target.rsplit(":", 1)
            flood = Flood(host, int(port), "/rnnserve.v1.Inference/Classify", body, seconds + 2).start()
            time.sleep(1)
            t0, sent0 = time.monotonic(), flood.sent
            loud, loud_codes = _latencies(stub, seconds, 20)
            rate = (flood.sent - sent0) / (time.monotonic() - t0)
            flood.stop()
            report("reset", limit, flood_streams_per_s=round(rate), flood_connections=flood.connections,
                   healthy_quiet=counts(quiet_codes), healthy_flooded=counts(loud_codes),
                   p99_quiet_ms=_p(quiet, 99), p99_flooded_ms=_p(loud, 99),
                   p99_ratio=round(_p(loud, 99) / _p(quiet, 99), 2), **server.summary())


def trace(args: argparse.Namespace) -> None:
    """A Trace client that reads nothing, then leaves at 0.3 s; and a sweep of lengths on every bundled LM."""
    chars = 1024 if args.quick else 4096
    with served(args, []) as (server, target), grpc.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        columns = max(1, (1 << 20) // chars)  # max_trace_work's default
        request = pb.TraceRequest(model="shakespeare-lstm", text="e" * chars, layers=[1], units=range(min(columns, 384)))
        before = server.status("VmRSS")
        call = stub.Trace(request, timeout=600)
        held = _sampled_rss(server, 5)
        call.cancel()
        call = stub.Trace(request, timeout=600)
        time.sleep(0.3)
        call.cancel()
        time.sleep(0.5)
        cpu0 = server.cpu_s()
        time.sleep(5)
        report("trace", "on", chars=chars, rss_before_mb=round(before), rss_held_by_non_reader_mb=round(held),
               cpu_s_in_5_s_after_client_left=round(server.cpu_s() - cpu0, 2), **server.summary())

        lengths = [1, 2, 127, 128, 129, 255, 1000, *([] if args.quick else [2048, 4096])]
        play = (ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt").read_text()[:4096]
        texts = {"e": "e" * 4096, "space": " " * 4096, "cjk": "漢字テキスト" * 700, "play": play}
        codes = []
        for lm in LMS:
            for text in texts.values():
                for n in lengths:
                    request = pb.TraceRequest(model=lm, text=text[:n], layers=[0], units=[0, 1])
                    codes.append(code_of(stub.Trace, request, timeout=600))
        report("trace sweep", "on", models=list(LMS), lengths=lengths, texts=list(texts), codes=counts(codes),
               **server.summary())


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


def metrics(args: argparse.Namespace) -> None:
    seconds = 5 if args.quick else 20
    off = ["--metrics-cache-s", "0", "--metrics-max-per-s", "1000000", "--metrics-max-clients", "1000"]
    request = pb.GenerateRequest(model="shakespeare-lstm", prompt="ROMEO:", max_tokens=32, seed=1)
    for limit, flags in (("off", off), ("on", [])):
        with served(args, flags) as (server, target), grpc.insecure_channel(target, options=OWN_CONNECTION) as ch:
            stub = pb_grpc.InferenceStub(ch)
            quiet = _generate_p50(stub, request, seconds)
            stopping, scrapes = threading.Event(), []
            flood = threading.Thread(target=_scrape_flood, args=(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                                                 128, stopping, scrapes))
            flood.start()
            loud = _generate_p50(stub, request, seconds)
            stopping.set()
            flood.join()
            report("metrics", limit, scrapes_per_s=128, generate_p50_quiet_ms=round(quiet, 2),
                   generate_p50_flooded_ms=round(loud, 2), ratio=round(loud / quiet, 2), scrapes=counts(scrapes),
                   **server.summary())


ATTACKS = {"classify": classify, "stream": stream, "streams": streams, "reset": reset, "trace": trace,
           "metrics": metrics}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated, of {', '.join(ATTACKS)}")
    ap.add_argument("--model-dir", default=str(ROOT / "models"))
    ap.add_argument("--memory-limit-mb", type=int, default=1024, help="the server's memory cgroup (deploy/ sets 1 GiB)")
    ap.add_argument("--through-nginx", action="store_true", help="clients go through deploy/nginx/nginx.conf")
    ap.add_argument("--quick", action="store_true", help="small counts and times")
    args = ap.parse_args()
    for name in args.attacks.split(","):
        ATTACKS[name](args)


if __name__ == "__main__":
    main()
