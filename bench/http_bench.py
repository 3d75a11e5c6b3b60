"""HTTP front door vs gRPC on the same server process: SSE streams against gRPC streams, side by side.

Measures, each as the median of paired runs (gRPC then SSE, back to back, so load from elsewhere moves both):
  1. one stream: chars/s over SSE / chars/s over gRPC                 (target >= 0.8)
  2. 64 concurrent streams: aggregate chars/s, SSE / gRPC              (target >= 0.8)
  3. client-side time to first text, p50 over sequential requests: SSE - gRPC (target <= 5 ms)

    python -m bench.http_bench --model-dir models --model shakespeare-lstm [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp
import grpc

from bench.serve_bench import ServerProcess
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc

PROMPT = "ROMEO:"


async def grpc_stream(stub: pb_grpc.InferenceStub, model: str, n: int, seed: int) -> tuple[int, float]:
    """(characters, seconds from sending to the first text) of one Generate stream."""
    t0, first, chars = time.perf_counter(), None, 0
    async for reply in stub.Generate(pb.GenerateRequest(model=model, prompt=PROMPT, max_tokens=n, seed=seed)):
        if reply.text and first is None:
            first = time.perf_counter() - t0
        chars += len(reply.text)
    return chars, first or 0.0


async def sse_stream(http: aiohttp.ClientSession, url: str, model: str, n: int, seed: int) -> tuple[int, float]:
    """The same over server-sent events: one event per chunk, parsed as a browser would."""
    body = {"model": model, "prompt": PROMPT, "max_tokens": n, "seed": seed, "stream": True}
    t0, first, chars = time.perf_counter(), None, 0
    async with http.post(f"{url}/v1/generate", json=body) as r:
        r.raise_for_status()
        async for line in r.content:
            if line.startswith(b"data:"):
                text = json.loads(line[5:])["text"]
                if text and first is None:
                    first = time.perf_counter() - t0
                chars += len(text)
    return chars, first or 0.0


async def throughput(run, streams: int, n: int) -> float:
    """Aggregate chars/s of `streams` concurrent streams of n characters."""
    t0 = time.perf_counter()
    results = await asyncio.gather(*(run(n, seed) for seed in range(streams)))
    assert all(chars == n for chars, _ in results), "a stream ended early"
    return streams * n / (time.perf_counter() - t0)


async def main(a: argparse.Namespace) -> None:
    flags = ["--intra-op-threads", str(a.threads), "--max-streams", "64", "--max-queue", "64",
             "--max-tokens-limit", "100000", "--http-port", "0"]
    with ServerProcess(a.model_dir, *flags) as srv:
        url = f"http://localhost:{srv.http_port}"
        async with grpc.aio.insecure_channel(f"localhost:{srv.port}") as channel, aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None), connector=aiohttp.TCPConnector(limit=0)) as http:
            stub = pb_grpc.InferenceStub(channel)

            def over_grpc(n: int, seed: int):
                return grpc_stream(stub, a.model, n, seed)

            def over_sse(n: int, seed: int):
                return sse_stream(http, url, a.model, n, seed)

            # Warm both paths with as many streams as the 64-stream run: gRPC multiplexes them on its one connection,
            # SSE needs a connection each, which the client then keeps; opening them is not what is measured.
            await throughput(over_grpc, 64, 20), await throughput(over_sse, 64, 20)
            single, many, ttft = [], [], {"grpc": [], "sse": []}
            for pair in range(a.pairs):
                g, s = await throughput(over_grpc, 1, a.chars), await throughput(over_sse, 1, a.chars)
                single.append((g, s))
                g, s = await throughput(over_grpc, 64, a.chars_64), await throughput(over_sse, 64, a.chars_64)
                many.append((g, s))
                for _ in range(a.ttft_requests):
                    ttft["grpc"].append((await over_grpc(8, pair))[1])
                    ttft["sse"].append((await over_sse(8, pair))[1])
                print(f"pair {pair + 1}/{a.pairs}: 1 stream {single[-1][0]:,.0f} vs {single[-1][1]:,.0f} chars/s, "
                      f"64 streams {many[-1][0]:,.0f} vs {many[-1][1]:,.0f} chars/s (gRPC vs SSE)", flush=True)

    def ratio(pairs: list[tuple[float, float]]) -> str:
        r = [s / g for g, s in pairs]
        return (f"{statistics.median(r):.2f} (gRPC {statistics.median(g for g, _ in pairs):,.0f}, SSE "
                f"{statistics.median(s for _, s in pairs):,.0f} chars/s; pairs {min(r):.2f}-{max(r):.2f})")
    g50, s50 = (statistics.median(ttft[k]) * 1e3 for k in ("grpc", "sse"))
    print(f"\none stream, SSE / gRPC chars/s:       {ratio(single)}   target >= 0.8")
    print(f"64 streams, SSE / gRPC chars/s:       {ratio(many)}   target >= 0.8")
    print(f"time to first text p50, SSE - gRPC:   {s50 - g50:+.2f} ms (gRPC {g50:.2f} ms, SSE {s50:.2f} ms, "
          f"{len(ttft['sse'])} requests each)   target <= 5 ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", default="models")
    ap.add_argument("--model", default="shakespeare-lstm")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of the server's sessions")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--chars", type=int, default=20_000, help="characters of the single stream")
    ap.add_argument("--chars-64", type=int, default=2_000, help="characters of each of the 64 streams")
    ap.add_argument("--ttft-requests", type=int, default=20, help="sequential short requests per pair, per protocol")
    ap.add_argument("--quick", action="store_true", help="a short run that checks the script works")
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.chars, args.chars_64, args.ttft_requests = 1, 2_000, 200, 5
    asyncio.run(main(args))
