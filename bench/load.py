"""Load generator: concurrent streams and a Classify rate, capacity sweeps, overload and a bounded soak.

    python -m bench.load streams  --streams 32 --rate 50 --seconds 30
    python -m bench.load capacity --seconds 10 --p99-ms 50 --classify-p99-ms 100
    python -m bench.load overload --max-streams 16 --max-queue 8 --excess-rates 100,300,1000 --seconds 15
    python -m bench.load soak     --seconds 600

Each mode starts `python -m service` over --model-dir on free ports with metrics on (or loads a
server already running at --target), prints a table and writes a JSON (--out). Latencies are
measured by the client as characters arrive (flush_chars=1); where the server's /metrics is
known its own inter-character histogram is reported beside them, with the CPU the server and
this client used (on a small machine they compete). soak and overload exit non-zero on any
unexpected status code or load gauges that did not return to zero (soak: or a server that died;
overload: or nothing refused).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path

import grpc
import numpy as np

from bench.load_client import Mix, Tally, classify_rate, excess_rate, hold_streams, soak_streams
from bench.load_server import Target, target
from bench.serve_bench import ROOT, quantile, sst2_texts
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc

INTER_CHAR = "rnnserve_inter_char_seconds"


def window(seconds: float) -> Tally:
    """A measuring window starting after a short ramp (the first burst of prompts), lasting `seconds`."""
    start = time.perf_counter() + min(1.0, seconds / 10)
    return Tally(start, start + seconds)


def server_p99_ms(t: Target, model: str, before: list, after: list) -> float | None:
    """The server's own p99 inter-character latency between two scrapes (None without /metrics or characters)."""
    if not before or after[-1][1] == before[-1][1]:
        return None
    return quantile(before, after, 0.99) * 1e3


def drive(t: Target, body: Callable[[pb_grpc.InferenceStub], Awaitable[None]]) -> dict[str, float | None]:
    """Run the load `body` over one channel; returns the CPU cores the server and this client used meanwhile.

    On a machine with few cores the two compete, so both belong beside every latency figure.
    """
    async def run() -> None:
        async with grpc.aio.insecure_channel(t.address) as channel:
            await body(pb_grpc.InferenceStub(channel))

    wall, client, server = time.perf_counter(), time.process_time(), t.cpu_s()
    asyncio.run(run())
    wall = time.perf_counter() - wall
    return {"client_cores": (time.process_time() - client) / wall,
            "server_cores": None if server is None else (t.cpu_s() - server) / wall}


def run_streams(t: Target, lm: str, n: int, seconds: float, max_tokens: int, classifier: str | None = None,
                rate: float = 0.0, texts: list[str] | None = None) -> dict:
    """n streams held for `seconds` (each restarting when it finishes) plus an open-loop Classify rate."""
    tally = window(seconds)
    h0 = t.histogram(INTER_CHAR, model=lm)

    async def body(stub: pb_grpc.InferenceStub) -> None:
        jobs = [hold_streams(stub, tally, n, lm, max_tokens)] if n else []
        if rate and classifier:
            jobs.append(classify_rate(stub, tally, classifier, texts or sst2_texts(), rate))
        await asyncio.gather(*jobs)

    cpu = drive(t, body)
    r = {"streams": n, "rate": rate, **tally.summary(), **cpu}
    r["server_inter_char_p99_ms"] = server_p99_ms(t, lm, h0, t.histogram(INTER_CHAR, model=lm))
    return r


def sweep_until(steps: list, run: Callable[[object], dict], ok: Callable[[dict], bool],
                line: Callable[[dict], str]) -> list[dict]:
    """run(step) for each step in turn, marking each row ok or not; stops after the first that is not."""
    rows = []
    for step in steps:
        row = run(step)
        row["ok"] = ok(row) and not row["unexpected"]
        rows.append(row)
        print(f"  {line(row)}", flush=True)
        if not row["ok"]:
            break
    return rows


def run_capacity(t: Target, lm: str, classifier: str | None, sweep: list[int], rates: list[float], seconds: float,
                 max_tokens: int, p99_ms: float, classify_p99_ms: float, texts: list[str]) -> dict:
    """The largest N whose p99 inter-char stays under p99_ms, and the largest Classify rate under classify_p99_ms.

    Each sweep stops at the first step over its bound (or with an error, or a rate it could not keep).
    """
    r: dict = {"p99_bound_ms": p99_ms, "classify_p99_bound_ms": classify_p99_ms}
    r["streams"] = sweep_until(
        sweep, lambda n: run_streams(t, lm, n, seconds, max_tokens),
        lambda x: x["inter_char_p99_ms"] is not None and x["inter_char_p99_ms"] <= p99_ms,
        lambda x: f"{x['streams']:4d} streams: {x['chars_per_s']:8.0f} chars/s, inter-char p99 "
                  f"{fmt(x['inter_char_p99_ms'])} ms (server {fmt(x['server_inter_char_p99_ms'])}), "
                  f"TTFC p99 {fmt(x['ttfc_p99_ms'])} ms")
    r["max_streams_under_bound"] = max((x["streams"] for x in r["streams"] if x["ok"]), default=0)
    r["classify"] = sweep_until(
        rates if classifier else [], lambda rate: run_streams(t, lm, 0, seconds, max_tokens, classifier, rate, texts),
        lambda x: x["classify_p99_ms"] is not None and x["classify_p99_ms"] <= classify_p99_ms
        and x["classify_per_s"] >= 0.95 * x["rate"],
        lambda x: f"{x['rate']:6.0f} classify/s offered: {x['classify_per_s']:6.0f} answered/s, "
                  f"p50 {fmt(x['classify_p50_ms'])} ms, p99 {fmt(x['classify_p99_ms'])} ms")
    r["max_classify_rate_under_bound"] = max((x["rate"] for x in r["classify"] if x["ok"]), default=0)
    return r


def run_overload(t: Target, lm: str, max_streams: int, max_queue: int, excess_rates: list[float], seconds: float,
                 max_tokens: int) -> dict:
    """A full server (max_streams streams running, max_queue waiting), then the same plus excess requests at each rate.

    Every excess request should be refused with RESOURCE_EXHAUSTED at once; every stream that was
    admitted must finish, and keep its inter-character latency: the ratio of its p99 to the full
    server's without the excess.
    """
    held = max_streams + max_queue
    base = run_streams(t, lm, held, seconds, max_tokens)
    r = {"max_streams": max_streams, "max_queue": max_queue, "baseline": base, "overload": []}
    for rate in excess_rates:
        tally = window(seconds)
        h0 = t.histogram(INTER_CHAR, model=lm)

        async def body(stub: pb_grpc.InferenceStub, tally: Tally = tally, rate: float = rate) -> None:
            await asyncio.gather(hold_streams(stub, tally, held, lm, max_tokens, design="over"),
                                 excess_rate(stub, tally, lm, max_tokens, rate))

        cpu = drive(t, body)
        row = {"excess_rate": rate, **tally.summary(), **cpu}
        row["server_inter_char_p99_ms"] = server_p99_ms(t, lm, h0, t.histogram(INTER_CHAR, model=lm))
        for design in ("excess", "over"):
            row[f"{design}_admitted"] = tally.outcomes[(design, "OK")]
            row[f"{design}_refused"] = tally.outcomes[(design, "RESOURCE_EXHAUSTED")]
        row["p99_ratio"] = ratio(row["inter_char_p99_ms"], base["inter_char_p99_ms"])
        row["server_p99_ratio"] = ratio(row["server_inter_char_p99_ms"], base["server_inter_char_p99_ms"])
        r["overload"].append(row)
    r["gauges_after"] = t.settle()
    return r


def run_soak(t: Target, lm: str, classifier: str | None, n: int, rate: float, seconds: float, max_tokens: int,
             texts: list[str], rss_every: float, warmup: float, mix: Mix | None = None) -> dict:
    """A steady fault mix for `seconds` with the server's RSS sampled every rss_every s; slope after warmup s."""
    mix = mix or Mix()
    gauges_before = t.load_gauges()
    tally = Tally(time.perf_counter(), time.perf_counter() + seconds)
    rss: list[tuple[float, float]] = []
    alive = [t.alive()]

    async def sample() -> None:
        while time.perf_counter() < tally.end and alive[-1]:
            if (mb := t.rss_mb()) is not None:
                rss.append((time.perf_counter() - tally.start, mb))
            alive.append(t.alive())
            await asyncio.sleep(min(rss_every, max(0.0, tally.end - time.perf_counter())))

    async def body(stub: pb_grpc.InferenceStub) -> None:
        jobs = [soak_streams(stub, tally, n, lm, max_tokens, mix), sample()]
        if classifier and rate:
            jobs.append(classify_rate(stub, tally, classifier, texts, rate, invalid=0.1, rng=random.Random(1)))
        await asyncio.gather(*jobs)

    cpu = drive(t, body)
    r = {**cpu, "streams": n, "rate": rate, "mix": asdict(mix), "server_alive": alive[-1] and t.alive(), **tally.summary(),
         "expected": {f"{d}:{c}": k for (d, c), k in tally.expected().items()}, "gauges_before": gauges_before,
         "gauges_after": t.settle(), "rss_samples": rss}
    r["unexpected_total"] = sum(r["unexpected"].values())
    if rss:
        r["rss_start_mb"], r["rss_end_mb"] = rss[0][1], rss[-1][1]
        late = np.array([x for x in rss if x[0] >= warmup])
        r["rss_slope_mb_per_min"] = float(np.polyfit(late[:, 0] / 60, late[:, 1], 1)[0]) if len(late) >= 3 else None
        r["rss_samples_in_slope"] = len(late)
    return r


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(title: str, rows: list[tuple[str, object]]) -> None:
    print(f"\n{title}\n| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {fmt(value) if isinstance(value, float) or value is None else value} |")


def stream_rows(r: dict) -> list[tuple[str, object]]:
    return [("chars/s", r["chars_per_s"]), ("chars per message", r["chars_per_message"]),
            ("inter-char p50 / p99 ms (client)", f"{fmt(r['inter_char_p50_ms'])} / {fmt(r['inter_char_p99_ms'])}"),
            ("inter-char p99 ms (server histogram)", r["server_inter_char_p99_ms"]),
            ("time to first char p50 / p99 ms", f"{fmt(r['ttfc_p50_ms'])} / {fmt(r['ttfc_p99_ms'])}"),
            ("classify answered/s", r["classify_per_s"]),
            ("classify p50 / p99 ms", f"{fmt(r['classify_p50_ms'])} / {fmt(r['classify_p99_ms'])}"),
            ("Generate final codes", r["generate_codes"]), ("Classify final codes", r["classify_codes"]),
            ("unexpected", r["unexpected"] or 0),
            ("CPU cores used: server / this client", f"{fmt(r['server_cores'])} / {fmt(r['client_cores'])}")]


def report(mode: str, r: dict) -> None:
    if mode == "streams":
        table(f"{r['streams']} streams + {r['rate']:.0f} classify/s for {r['seconds']:.0f} s", stream_rows(r))
    elif mode == "capacity":
        print(f"\n| streams | chars/s | inter-char p99 ms (client) | (server) | TTFC p99 ms | under {r['p99_bound_ms']} ms |"
              "\n|---|---|---|---|---|---|")
        for x in r["streams"]:
            print(f"| {x['streams']} | {x['chars_per_s']:.0f} | {fmt(x['inter_char_p99_ms'])} | "
                  f"{fmt(x['server_inter_char_p99_ms'])} | {fmt(x['ttfc_p99_ms'])} | {'yes' if x['ok'] else 'NO'} |")
        print(f"\n| classify offered/s | answered/s | p50 ms | p99 ms | under {r['classify_p99_bound_ms']} ms |"
              "\n|---|---|---|---|---|")
        for x in r["classify"]:
            print(f"| {x['rate']:.0f} | {x['classify_per_s']:.0f} | {fmt(x['classify_p50_ms'])} | "
                  f"{fmt(x['classify_p99_ms'])} | {'yes' if x['ok'] else 'NO'} |")
        def more(rows: list[dict]) -> str:  # every step passed: the sweep did not find the limit
            return " (every step passed: sweep further)" if rows and rows[-1]["ok"] else ""

        print(f"\nmax streams with p99 inter-char <= {r['p99_bound_ms']} ms: {r['max_streams_under_bound']}"
              f"{more(r['streams'])}; max classify rate with p99 <= {r['classify_p99_bound_ms']} ms: "
              f"{r['max_classify_rate_under_bound']}/s{more(r['classify'])}")
    elif mode == "overload":
        b = r["baseline"]
        print(f"\noverload: {r['max_streams']} streams running + {r['max_queue']} waiting, then excess Generate requests "
              f"at each rate; full server alone: inter-char p99 {fmt(b['inter_char_p99_ms'])} ms (server "
              f"{fmt(b['server_inter_char_p99_ms'])}), {b['chars_per_s']:.0f} chars/s, server {fmt(b['server_cores'])} "
              f"cores, client {fmt(b['client_cores'])}")
        print("\n| excess/s | excess refused / admitted | refusal p50 / p99 ms | holders' restarts refused | "
              "admitted inter-char p99 ms client (x alone) | server (x alone) | chars/s | cores server / client | "
              "unexpected |\n|---|---|---|---|---|---|---|---|---|")
        for o in r["overload"]:
            print(f"| {o['excess_rate']:.0f} | {o['excess_refused']} / {o['excess_admitted']} | "
                  f"{fmt(o.get('refusal_excess_p50_ms'))} / {fmt(o.get('refusal_excess_p99_ms'))} | {o['over_refused']} | "
                  f"{fmt(o['inter_char_p99_ms'])} (x{fmt(o['p99_ratio'])}) | "
                  f"{fmt(o['server_inter_char_p99_ms'])} (x{fmt(o['server_p99_ratio'])}) | {o['chars_per_s']:.0f} | "
                  f"{fmt(o['server_cores'])} / {fmt(o['client_cores'])} | {o['unexpected'] or 0} |")
        print(f"gauges after: {r['gauges_after']}")
    else:
        table(f"soak: {r['streams']} stream workers + {r['rate']:.0f} classify/s for {r['seconds']:.0f} s", [
            ("RSS start -> end MB", f"{fmt(r.get('rss_start_mb'), 1)} -> {fmt(r.get('rss_end_mb'), 1)}"),
            (f"RSS slope MB/min ({r.get('rss_samples_in_slope', 0)} samples after warm-up)",
             fmt(r.get("rss_slope_mb_per_min"), 3)),
            ("expected outcomes", r["expected"]), ("UNEXPECTED", r["unexpected"] or 0),
            ("server alive", r["server_alive"]), ("gauges before -> after", f"{r['gauges_before']} -> {r['gauges_after']}"),
            ("chars/s", r["chars_per_s"]),
            ("inter-char p50 / p99 ms (client)", f"{fmt(r['inter_char_p50_ms'])} / {fmt(r['inter_char_p99_ms'])}"),
            ("classify answered/s, p50 / p99 ms",
             f"{r['classify_per_s']:.1f}, {fmt(r['classify_p50_ms'])} / {fmt(r['classify_p99_ms'])}"),
            ("CPU cores used: server / this client", f"{fmt(r['server_cores'])} / {fmt(r['client_cores'])}")])


def failed(mode: str, r: dict) -> list[str]:
    """Why a soak or overload run fails (empty when it passed)."""
    why = []
    if mode == "soak":
        why += [f"{r['unexpected_total']} unexpected outcomes"] if r["unexpected_total"] else []
        why += ["the server died"] if not r["server_alive"] else []
        why += [f"load gauges did not return to zero: {r['gauges_after']}"] if any(r["gauges_after"].values()) else []
    if mode == "overload":
        for o in [r["baseline"], *r["overload"]]:
            why += [f"unexpected outcomes {o['unexpected']}"] if o["unexpected"] else []
        why += [f"nothing refused at {o['excess_rate']:.0f}/s" for o in r["overload"] if not o["excess_refused"]]
        why += [f"load gauges did not return to zero: {r['gauges_after']}"] if any(r["gauges_after"].values()) else []
    return why


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["streams", "capacity", "overload", "soak"])
    p.add_argument("--model-dir", default="models")
    p.add_argument("--lm", default="shakespeare-lstm", help="char LM for Generate streams")
    p.add_argument("--classifier", default="sst2-bilstm", help="classifier for Classify ('' for none)")
    p.add_argument("--target", help="host:port of a running server instead of starting one")
    p.add_argument("--target-metrics", help="with --target: host:port of its /metrics")
    p.add_argument("--target-pid", type=int, help="with --target: its process id, for RSS (soak)")
    p.add_argument("--server-args", default="", help="extra flags for the started server, e.g. '--intra-op-threads 1'")
    p.add_argument("--seconds", type=float, help="run length (capacity, overload: per step; default 30 / 10 / 15 / 600)")
    p.add_argument("--max-tokens", type=int, default=200, help="characters per stream before it restarts")
    p.add_argument("--streams", type=int, help="streams / stream workers (streams: 32, soak: 8)")
    p.add_argument("--rate", type=float, help="Classify requests per second, open loop (streams: 50, soak: 20)")
    p.add_argument("--sweep", default="1,8,16,32,64,96,128,192,256,384,512", help="capacity: stream counts ('' for none)")
    p.add_argument("--rates", default="25,50,100,200,400,600,800,1200,1600", help="capacity: Classify rates ('' for none)")
    p.add_argument("--p99-ms", type=float, default=50.0, help="capacity: bound on p99 inter-char latency")
    p.add_argument("--classify-p99-ms", type=float, default=100.0, help="capacity: bound on p99 Classify latency")
    p.add_argument("--max-streams", type=int, default=16, help="overload: the server's --max-streams")
    p.add_argument("--max-queue", type=int, default=8, help="overload: the server's --max-queue")
    p.add_argument("--excess-rates", default="100,300,1000", help="overload: excess Generate requests/s, open loop")
    p.add_argument("--rss-every", type=float, default=5.0, help="soak: seconds between RSS samples")
    p.add_argument("--warmup", type=float, help="soak: seconds of RSS left out of the slope (default min(60, seconds/5))")
    p.add_argument("--out", help="JSON path (default bench/out/load_<mode>.json)")
    a = p.parse_args(argv)
    seconds = a.seconds or {"streams": 30, "capacity": 10, "overload": 15, "soak": 600}[a.mode]
    clf = a.classifier or None
    texts = sst2_texts()
    sweep, rates = [int(x) for x in a.sweep.split(",") if x], [float(x) for x in a.rates.split(",") if x]
    n = a.streams if a.streams is not None else {"soak": 8}.get(a.mode, 32)
    rate = a.rate if a.rate is not None else {"soak": 20.0}.get(a.mode, 50.0)
    flags = {"streams": ["--max-streams", str(max(n, 64))], "capacity": ["--max-streams", str(max(sweep, default=64)),
                                                                           "--max-queue", str(max(sweep, default=64))],
             "overload": ["--max-streams", str(a.max_streams), "--max-queue", str(a.max_queue)],
             "soak": []}[a.mode] + shlex.split(a.server_args)
    with target(a.model_dir, flags, a.target, a.target_metrics, a.target_pid) as t:
        print(f"{a.mode}: server {t.address} (pid {t.pid}, metrics {t.metrics}), LM {a.lm}, classifier {clf}", flush=True)
        if a.mode == "streams":
            r = run_streams(t, a.lm, n, seconds, a.max_tokens, clf, rate, texts)
        elif a.mode == "capacity":
            r = run_capacity(t, a.lm, clf, sweep, rates, seconds, a.max_tokens, a.p99_ms, a.classify_p99_ms, texts)
        elif a.mode == "overload":
            r = run_overload(t, a.lm, a.max_streams, a.max_queue, [float(x) for x in a.excess_rates.split(",")], seconds,
                             a.max_tokens)
        else:
            warmup = a.warmup if a.warmup is not None else min(60.0, seconds / 5)
            r = run_soak(t, a.lm, clf, n, rate, seconds, a.max_tokens, texts, a.rss_every, warmup)
    r.update(mode=a.mode, lm=a.lm, classifier=clf, max_tokens=a.max_tokens, argv=sys.argv[1:] if argv is None else argv)
    report(a.mode, r)
    out = Path(a.out or ROOT / "bench" / "out" / f"load_{a.mode}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=1))
    why = failed(a.mode, r)
    for line in why:
        print(f"FAILED: {line}")
    return 1 if why else 0


if __name__ == "__main__":
    sys.exit(main())
