"""Translation serving benchmark: the issue's targets measured side by side in one run, printed as ratios.

    python -m bench.translate_bench --model-dir models --model multi30k-de-en [--quick]

The server runs as its own process (python -m service); the clients here use grpc.aio and translate
Multi30k validation sentences greedily. The in-process limit is a plain loop over the same ONNX Runtime
sessions doing the same decoding: one sentence at a time, or batches of 64 sentences decoded together
until the last one ends (static batching). Each server figure follows its in-process baseline and both
are repeated, so a noisy machine shifts both sides of a ratio together.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import grpc
import numpy as np

from bench.serve_bench import ServerProcess, quantile
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from service.models.model import Model
from service.models.repository import Repository

ROOT = Path(__file__).resolve().parent.parent
MULTI30K_VAL = ROOT.parent / "shared" / "data" / "multi30k" / "val"


def sentences(model: Model, n: int) -> list[str]:
    """The first n validation sentences in the model's source language (repeated if the file is shorter)."""
    lang = model.meta.translator["languages"]["source"]
    path = MULTI30K_VAL.with_suffix(f".{lang}")
    lines = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path.exists() else []
    lines = lines or ["Ein Mann schläft in einem grünen Raum auf einem Sofa.", "Zwei Hunde spielen im Schnee."]
    return [lines[i % len(lines)] for i in range(n)]


def greedy_inprocess(model: Model, texts: list[str]) -> dict:
    """The texts decoded greedily as one static batch with the served runner: what a hand-written loop does."""
    tok, runner = model.tokenizer, model.runner
    rule = model.meta.translator["max_len"]
    sources = [tok.encode_source(t) for t in texts]
    limit = np.array([int(rule["a"] * len(s) + rule["b"]) for s in sources])
    t0 = time.perf_counter()
    memories = runner.encode(sources)
    S = max(m.length for m in memories)
    memory = np.stack([np.pad(m.memory, ((0, S - m.length), (0, 0))) for m in memories])
    keys = np.stack([np.pad(m.keys, ((0, S - m.length), (0, 0))) for m in memories])
    mask = np.arange(S)[None] < np.array([m.length for m in memories])[:, None]
    state = [np.stack([m.state[j] for m in memories], axis=1) for j in range(len(memories[0].state))]
    B = len(texts)
    prev, live, tokens, steps = np.full(B, tok.bos, np.int64), np.ones(B, bool), 0, []
    for t in range(int(limit.max())):
        s0 = time.perf_counter()
        logits, state, _ = runner.step(prev, state, memory, keys, mask)
        prev = logits.argmax(axis=1)
        steps.append(time.perf_counter() - s0)
        tokens += int(live.sum())
        live &= (prev != tok.eos) & (t + 1 < limit)
        if not live.any():
            break
    seconds = time.perf_counter() - t0
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "step_median_s": statistics.median(steps), "step_p99_s": float(np.percentile(steps, 99))}


def inprocess(model: Model, texts: list[str], B: int) -> dict:
    """Every text, in static batches of B: tokens/s, sentences/s and the median step of the batches."""
    runs = [greedy_inprocess(model, texts[i : i + B]) for i in range(0, len(texts), B)]
    seconds, tokens = sum(r["seconds"] for r in runs), sum(r["tokens"] for r in runs)
    return {"tokens_per_s": tokens / seconds, "sentences_per_s": len(texts) / seconds,
            "step_median_s": statistics.median(r["step_median_s"] for r in runs),
            "step_p99_s": statistics.median(r["step_p99_s"] for r in runs)}


async def translate(stub: pb_grpc.InferenceStub, model: str, text: str) -> tuple[int, float]:
    """One streamed greedy translation: (tokens generated, seconds from sending to its final message)."""
    t0 = time.perf_counter()
    async for r in stub.Translate(pb.TranslateRequest(model=model, text=text)):
        if r.HasField("finished"):
            return r.finished.usage.generated_tokens, time.perf_counter() - t0
    raise RuntimeError("a Translate stream ended without its final message")


async def clients(port: int, model: str, texts: list[str], n_clients: int) -> dict:
    """n_clients concurrent callers, each translating its share of the texts one after another."""
    async with grpc.aio.insecure_channel(f"localhost:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)

        async def caller(i: int) -> list[tuple[int, float]]:
            return [await translate(stub, model, t) for t in texts[i::n_clients]]

        t0 = time.perf_counter()
        done = await asyncio.gather(*(caller(i) for i in range(n_clients)))
        seconds = time.perf_counter() - t0
    tokens = sum(n for run in done for n, _ in run)
    return {"tokens_per_s": tokens / seconds, "sentences_per_s": len(texts) / seconds}


async def batches(port: int, model: str, texts: list[str], size: int) -> float:
    """TranslateBatch of `size` texts at a time, one request after another: sentences/s."""
    async with grpc.aio.insecure_channel(f"localhost:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        t0 = time.perf_counter()
        for i in range(0, len(texts), size):
            await stub.TranslateBatch(pb.TranslateBatchRequest(model=model, texts=texts[i : i + size]))
        return len(texts) / (time.perf_counter() - t0)


def position_cost(model: Model, text: str, steps: int, repeats: int = 3) -> np.ndarray:
    """Seconds per decoder step at each output position of one translation made to run `steps` steps (EOS
    ignored), the fastest of `repeats` runs: the state is carried and attention reads a fixed memory, so
    it should not grow with the position."""
    runner, tok = model.runner, model.tokenizer
    (m,) = runner.encode([tok.encode_source(text)])
    memory, keys, mask = m.memory[None], m.keys[None], np.ones((1, m.length), bool)
    cost = np.zeros((repeats, steps))
    for r in range(repeats):
        state, prev = [x[:, None] for x in m.state], np.full(1, tok.bos, np.int64)
        for t in range(steps):
            t0 = time.perf_counter()
            logits, state, _ = runner.step(prev, state, memory, keys, mask)
            logits[0, tok.eos] = -np.inf
            prev = logits.argmax(axis=1)
            cost[r, t] = time.perf_counter() - t0
    return cost.min(axis=0)


def measure(srv: ServerProcess, model: Model, r: dict, texts: list[str], repeats: int) -> None:
    name, single_texts = model.name, texts[: max(8, len(texts) // 8)]
    ones, many = [], []
    for _ in range(repeats):
        base = inprocess(model, single_texts, 1)
        run = asyncio.run(clients(srv.port, name, single_texts, 1))
        ones.append((base, run))
        print(f"  pair: in-process one at a time {base['tokens_per_s']:.0f} tokens/s, server {run['tokens_per_s']:.0f}",
              flush=True)
    for _ in range(repeats):
        base = inprocess(model, texts, 64)
        h0 = srv.histogram("rnnserve_inter_token_seconds", model=name)
        run = asyncio.run(clients(srv.port, name, texts, 64))
        h1 = srv.histogram("rnnserve_inter_token_seconds", model=name)
        many.append((base, run, quantile(h0, h1, 0.5), quantile(h0, h1, 0.99)))
        print(f"  pair: in-process batch-64 {base['tokens_per_s']:.0f} tokens/s, step {base['step_median_s'] * 1e3:.2f} ms; "
              f"server {run['tokens_per_s']:.0f}, inter-token p99 {many[-1][3] * 1e3:.2f} ms", flush=True)
    r["inproc_b1_tokens_per_s"] = statistics.median(b["tokens_per_s"] for b, _ in ones)
    r["single_tokens_per_s"] = statistics.median(x["tokens_per_s"] for _, x in ones)
    r["single_vs_inproc"] = statistics.median(x["tokens_per_s"] / b["tokens_per_s"] for b, x in ones)
    r["inproc_b64_tokens_per_s"] = statistics.median(b["tokens_per_s"] for b, *_ in many)
    r["inproc_b64_sentences_per_s"] = statistics.median(b["sentences_per_s"] for b, *_ in many)
    r["inproc_b64_step_ms"] = statistics.median(b["step_median_s"] for b, *_ in many) * 1e3
    r["inproc_b64_step_p99_ms"] = statistics.median(b["step_p99_s"] for b, *_ in many) * 1e3
    r["many_tokens_per_s"] = statistics.median(x["tokens_per_s"] for _, x, *_ in many)
    r["many_vs_inproc"] = statistics.median(x["tokens_per_s"] / b["tokens_per_s"] for b, x, *_ in many)
    r["inter_token_p50_ms"] = statistics.median(p50 for *_, p50, _ in many) * 1e3
    r["inter_token_p99_ms"] = statistics.median(p99 for *_, p99 in many) * 1e3
    r["p99_vs_step"] = statistics.median(p99 / b["step_median_s"] for b, *_, p99 in many)
    r["batch_sentences_per_s"] = statistics.median(asyncio.run(batches(srv.port, name, texts, 64)) for _ in range(repeats))


def report(r: dict) -> None:
    rows = [
        ("single translation / in-process loop, one at a time", r["single_vs_inproc"], ">=", 0.85),
        ("64 concurrent / single translation, tokens/s", r["many_tokens_per_s"] / r["single_tokens_per_s"], ">=", 6.0),
        ("  ceiling: in-process batch-64 / one at a time", r["inproc_b64_tokens_per_s"] / r["inproc_b1_tokens_per_s"],
         "(report)", None),
        ("64 concurrent / in-process batch-64 loop, tokens/s", r["many_vs_inproc"], ">=", 0.75),
        ("p99 inter-token at 64 / in-process batch-64 step", r["p99_vs_step"], "<=", 2.0),
        ("  noise floor: in-process batch-64 step, p99 / median", r["inproc_b64_step_p99_ms"] / r["inproc_b64_step_ms"],
         "(report)", None),
        ("TranslateBatch of 64 / in-process batch-64, sentences/s", r["batch_sentences_per_s"] / r["inproc_b64_sentences_per_s"],
         "(report)", None),
        ("step cost, last tenth / first tenth of the positions", r["position_last_tenth_us"] / r["position_first_tenth_us"],
         "(flat ~1)", None),
    ]
    print("\n| measure | ratio | target | |\n|---|---|---|---|")
    for name, ratio, op, target in rows:
        ok = "" if target is None else "PASS" if (ratio >= target if op == ">=" else ratio <= target) else "MISS"
        print(f"| {name} | {ratio:.2f} | {op} {target if target is not None else ''} | {ok} |")
    print(f"\nin-process: one at a time {r['inproc_b1_tokens_per_s']:.0f} tokens/s; batch-64 {r['inproc_b64_tokens_per_s']:.0f} "
          f"tokens/s, {r['inproc_b64_sentences_per_s']:.1f} sentences/s, {r['inproc_b64_step_ms']:.2f} ms/step median")
    print(f"server: single {r['single_tokens_per_s']:.0f} tokens/s; 64 concurrent {r['many_tokens_per_s']:.0f} tokens/s, "
          f"inter-token p50 {r['inter_token_p50_ms']:.2f} ms, p99 {r['inter_token_p99_ms']:.2f} ms; "
          f"TranslateBatch {r['batch_sentences_per_s']:.1f} sentences/s")
    print(f"decoder step by output position (one translation, in-process): {r['position_first_tenth_us']:.0f} us in the "
          f"first tenth, {r['position_last_tenth_us']:.0f} us in the last; slope {r['position_slope_us_per_100']:+.2f} us "
          f"per 100 positions")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.translate_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default="models")
    p.add_argument("--model", default="multi30k-de-en", help="translator to measure")
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads, both sides (0: the artifact's hint)")
    p.add_argument("--quick", action="store_true", help="shorter runs (about a minute)")
    p.add_argument("--repeats", type=int, default=3, help="pairs (in-process, server) per measure")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "translate_bench.json"))
    a = p.parse_args(argv)
    repo = Repository.load(a.model_dir, a.threads)
    model = repo.get(a.model)
    threads = a.threads or int(model.meta.runtime.get("intra_op_num_threads", 1))
    texts = sentences(model, 128 if a.quick else 512)
    print(f"model {a.model} v{model.version}: vocab {model.meta.sizes['src_vocab_size']} -> {model.meta.sizes['vocab_size']}, "
          f"decoder {model.meta.sizes['hidden_size']} wide, ORT intra-op threads {threads}", flush=True)
    r: dict = {"model": a.model, "threads": threads, "quick": a.quick}
    flags = ["--intra-op-threads", str(threads), "--max-streams", "64", "--max-queue", "64"]
    with ServerProcess(a.model_dir, *flags) as srv:
        asyncio.run(clients(srv.port, a.model, texts[:16], 4))  # warm up
        measure(srv, model, r, texts, 1 if a.quick else a.repeats)
    cost = position_cost(model, texts[0], 100 if a.quick else 300)
    tenth = len(cost) // 10
    r["position_first_tenth_us"] = float(np.median(cost[:tenth]) * 1e6)
    r["position_last_tenth_us"] = float(np.median(cost[-tenth:]) * 1e6)
    r["position_slope_us_per_100"] = float(np.polyfit(np.arange(len(cost)), cost, 1)[0] * 1e6 * 100)
    report(r)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
