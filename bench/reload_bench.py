"""Hot reload under load: model versions come and go while streams and a Classify rate run; none may fail.

    python -m bench.reload_bench --seconds 60 --period 4
    python -m bench.reload_bench --cycles 80      # do retired versions release their memory and threads?

Copies the char LM and the classifier from --model-dir into a scratch repository and serves it.
It first measures the load alone, then runs the same load while, every --period seconds, it
(1) moves a new LM version into place and calls Admin.ReloadModels, (2) deletes the previous
version and reloads, and (3) rewrites the classifier's meta.json in place and reloads (a
replaced version). Every stream and Classify request is designed to end OK; anything else is
unexpected, and the run exits 1. Prints the figures and writes a JSON (--out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from bench.load import INTER_CHAR, drive, fmt, ratio, run_streams, server_p99_ms, window
from bench.load_client import Tally, classify_rate, hold_streams
from bench.load_server import Target, target
from bench.serve_bench import ROOT, sst2_texts
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc


def scratch_repository(model_dir: Path, lm: str, classifier: str, root: Path) -> Path:
    """Version 1 of each model, copied: the benchmark adds and deletes versions there."""
    repo = root / "models"
    for name in (lm, classifier):
        shutil.copytree(model_dir / name / "1", repo / name / "1")
    return repo


async def churn(t: Target, repo: Path, lm: str, classifier: str, period: float, tally: Tally) -> dict:
    """Add, remove and replace versions until the window ends; the reload calls' durations and what they did."""
    seconds, changes, version = [], {"loaded": 0, "unloaded": 0, "failed": 0}, 1

    async def reload(admin: pb_grpc.AdminStub) -> None:
        t0 = time.perf_counter()
        reply = await admin.ReloadModels(pb.ReloadModelsRequest(), timeout=120)
        seconds.append(time.perf_counter() - t0)
        for key in changes:
            changes[key] += len(getattr(reply, key))

    async with grpc.aio.insecure_channel(t.address) as channel:
        admin = pb_grpc.AdminStub(channel)
        while time.perf_counter() < tally.end - period:
            await asyncio.sleep(period / 3)
            staging = repo.parent / f"staging-{version + 1}"
            await asyncio.to_thread(shutil.copytree, repo / lm / str(version), staging)
            staging.rename(repo / lm / str(version + 1))  # a complete version appears at once
            await reload(admin)
            await asyncio.sleep(period / 3)
            await asyncio.to_thread(shutil.rmtree, repo / lm / str(version))
            version += 1
            await reload(admin)
            await asyncio.sleep(period / 3)
            (repo / classifier / "1" / "meta.json").touch()  # the same version, rewritten: replaced in place
            await reload(admin)
    return {"reloads": len(seconds), **changes, "reload_p50_ms": float(np.percentile(seconds, 50)) * 1e3,
            "reload_max_ms": max(seconds) * 1e3, "lm_versions_served": version}


def run_reload(t: Target, repo: Path, lm: str, classifier: str, n: int, rate: float, seconds: float, period: float,
               max_tokens: int, texts: list[str]) -> dict:
    alone = run_streams(t, lm, n, seconds, max_tokens, classifier, rate, texts)
    tally, churned = window(seconds), {}
    h0 = t.histogram(INTER_CHAR, model=lm)

    async def body(stub: pb_grpc.InferenceStub) -> None:
        *_, done = await asyncio.gather(hold_streams(stub, tally, n, lm, max_tokens),
                                        classify_rate(stub, tally, classifier, texts, rate),
                                        churn(t, repo, lm, classifier, period, tally))
        churned.update(done)

    cpu = drive(t, body)
    r = {"alone": alone, "reloading": {**tally.summary(), **cpu, **churned}}
    r["reloading"]["server_inter_char_p99_ms"] = server_p99_ms(t, lm, h0, t.histogram(INTER_CHAR, model=lm))
    r["failed_requests"] = sum(r["reloading"]["unexpected"].values())
    r["p99_ratio"] = ratio(r["reloading"]["inter_char_p99_ms"], alone["inter_char_p99_ms"])
    r["classify_p99_ratio"] = ratio(r["reloading"]["classify_p99_ms"], alone["classify_p99_ms"])
    return r


def run_cycles(t: Target, repo: Path, lm: str, cycles: int) -> list[tuple[int, float, int]]:
    """Add and remove a version `cycles` times, a generation on each: (cycle, RSS MB, threads) every 10 cycles.

    Retired versions must be released: their ONNX Runtime sessions, buffers and decode threads.
    """
    rows, version = [], 1
    with grpc.insecure_channel(t.address) as channel:
        admin, stub = pb_grpc.AdminStub(channel), pb_grpc.InferenceStub(channel)
        for cycle in range(1, cycles + 1):
            staging = repo.parent / "staging"
            shutil.copytree(repo / lm / str(version), staging)
            staging.rename(repo / lm / str(version + 1))
            assert len(admin.ReloadModels(pb.ReloadModelsRequest(), timeout=120).loaded) == 1
            list(stub.Generate(pb.GenerateRequest(model=lm, prompt="A", max_tokens=20), timeout=60))
            shutil.rmtree(repo / lm / str(version))
            version += 1
            assert len(admin.ReloadModels(pb.ReloadModelsRequest(), timeout=120).unloaded) == 1
            if cycle % 10 == 0:
                time.sleep(0.5)  # the retired engine closes once its last request has ended
                rows.append((cycle, t.rss_mb(), len(list(Path(f"/proc/{t.pid}/task").iterdir()))))
                print(f"  cycle {cycle}: RSS {rows[-1][1]:.0f} MB, {rows[-1][2]} threads", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reload_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models")
    p.add_argument("--lm", default="shakespeare-lstm")
    p.add_argument("--classifier", default="sst2-bilstm")
    p.add_argument("--streams", type=int, default=32)
    p.add_argument("--rate", type=float, default=50.0, help="Classify requests per second, open loop")
    p.add_argument("--seconds", type=float, default=60.0, help="length of each of the two runs")
    p.add_argument("--period", type=float, default=4.0, help="seconds per add / remove / replace cycle")
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--cycles", type=int, default=0,
                   help="instead of the load runs: add and remove a version this many times, RSS every 10 cycles")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "reload.json"))
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rnnserve-reload-") as tmp:
        repo = scratch_repository(Path(a.model_dir), a.lm, a.classifier, Path(tmp))
        with target(str(repo), ["--max-streams", str(max(a.streams, 64))]) as t:
            if a.cycles:
                rows = run_cycles(t, repo, a.lm, a.cycles)
                rss = [mb for _, mb, _ in rows]
                print(f"\n{a.cycles} reload cycles: RSS {min(rss):.0f}-{max(rss):.0f} MB, threads "
                      f"{sorted({n for *_, n in rows})}")
                return 0
            r = run_reload(t, repo, a.lm, a.classifier, a.streams, a.rate, a.seconds, a.period, a.max_tokens,
                           sst2_texts())
    x, alone = r["reloading"], r["alone"]
    print(f"\n{a.streams} streams + {a.rate:.0f} classify/s for {a.seconds:.0f} s, alone and while reloading every "
          f"{a.period / 3:.1f} s\n| measure | alone | reloading |\n|---|---|---|")
    for name, key in (("inter-char p99 ms (client)", "inter_char_p99_ms"),
                      ("inter-char p99 ms (server)", "server_inter_char_p99_ms"),
                      ("classify p99 ms", "classify_p99_ms"), ("chars/s", "chars_per_s")):
        print(f"| {name} | {fmt(alone[key])} | {fmt(x[key])} |")
    print(f"| Generate codes | {alone['generate_codes']} | {x['generate_codes']} |")
    print(f"| Classify codes | {alone['classify_codes']} | {x['classify_codes']} |")
    print(f"\nreloads: {x['reloads']} calls (p50 {fmt(x['reload_p50_ms'])} ms, max {fmt(x['reload_max_ms'])} ms): "
          f"{x['loaded']} versions loaded, {x['unloaded']} unloaded, {x['failed']} refused; the LM reached version "
          f"{x['lm_versions_served']}\nfailed requests while reloading: {r['failed_requests']} {x['unexpected'] or ''}"
          f"\ninter-char p99 while reloading / alone: x{fmt(r['p99_ratio'])}; classify p99: "
          f"x{fmt(r['classify_p99_ratio'])}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=1))
    return 1 if r["failed_requests"] or alone["unexpected"] else 0


if __name__ == "__main__":
    sys.exit(main())
