"""Captioning serving benchmark: the issue's serving targets measured in one run, printed as figures and ratios.

    python -m bench.caption_bench --model-dir models --model NAME [--quick]           # latency and throughput
    python -m bench.caption_bench --model-dir models --model NAME --fuzz [--quick]    # malformed images

The server runs as its own process (python -m service); the clients here use grpc.aio.
- image -> first word: p50 / p90 of one Caption request at a time (client-side, from sending the image bytes to
  the first message with text, flush_chars 1). Target: p50 <= 30 ms.
- throughput: images/s captioned by 32 concurrent Caption requests against the same images one at a time
  (the encoder batches the ones that join together, decoder steps batch them all). Target: >= 5x.
- --fuzz: every malformed case of tests/support/images.py (and truncations of a real image at 50 points), each
  sent `--rounds` times: its worst latency to INVALID_ARGUMENT (target <= 1 s) and the server's RSS growth over
  the whole run (target <= 64 MB), with a well-formed caption before and after.
Images: Flickr8k test images from ../shared/data when present, else generated pictures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import grpc

from bench.serve_bench import ServerProcess
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from tests.support import images as fixtures

ROOT = Path(__file__).resolve().parent.parent
FLICKR = ROOT.parent / "shared" / "data" / "flickr8k"


def test_images(n: int) -> list[bytes]:
    """n image files: Flickr8k test images (the split's first n), else generated JPEGs."""
    split = FLICKR / "split_test.txt"
    if split.exists():
        names = [x.strip() for x in split.read_text().splitlines() if x.strip()][:n]
        found = [FLICKR / "images" / name for name in names]
        if found and all(p.exists() for p in found):
            return [p.read_bytes() for p in found]
    return [fixtures.jpeg(i, 500, 375) for i in range(n)]


async def first_word(stub: pb_grpc.InferenceStub, model: str, image: bytes) -> tuple[float, float]:
    """(seconds to the first text, seconds to the end) of one Caption request."""
    t0 = time.perf_counter()
    first = None
    async for reply in stub.Caption(pb.CaptionRequest(model=model, image=image, flush_chars=1)):
        if first is None and reply.text:
            first = time.perf_counter() - t0
    end = time.perf_counter() - t0
    return (first if first is not None else end), end


async def latency(stub: pb_grpc.InferenceStub, model: str, pics: list[bytes], rounds: int) -> None:
    firsts = []
    for _ in range(rounds):
        for image in pics:
            firsts.append((await first_word(stub, model, image))[0])
    firsts.sort()
    p50, p90 = statistics.median(firsts), firsts[int(0.9 * (len(firsts) - 1))]
    print(f"image -> first word, one request at a time: p50 {p50 * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms "
          f"({len(firsts)} requests; target p50 <= 30 ms)")


async def throughput(stub: pb_grpc.InferenceStub, model: str, pics: list[bytes], concurrency: int) -> None:
    t0 = time.perf_counter()
    for image in pics:
        await first_word(stub, model, image)
    serial = len(pics) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    queue = list(pics)

    async def worker() -> None:
        while queue:
            await first_word(stub, model, queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    together = len(pics) / (time.perf_counter() - t0)
    print(f"throughput: one at a time {serial:.1f} images/s, {concurrency} concurrent {together:.1f} images/s: "
          f"{together / serial:.2f}x (target >= 5x)")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def fuzz(stub: pb_grpc.InferenceStub, model: str, pid: int, real: bytes, rounds: int) -> None:
    cases = {name: data for name, (data, _) in fixtures.malformed().items()}
    cases.update({f"truncated_at_{k}": real[: len(real) * k // 50] for k in range(1, 50)})
    assert await first_word(stub, model, real)
    rss0, worst, wrong = rss_mb(pid), {}, []
    for _ in range(rounds):
        for name, data in cases.items():
            t0 = time.perf_counter()
            try:
                await first_word(stub, model, data)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as err:
                code = err.code()
            worst[name] = max(worst.get(name, 0.0), time.perf_counter() - t0)
            if code != grpc.StatusCode.INVALID_ARGUMENT:
                wrong.append((name, code.name))
    assert await first_word(stub, model, real)  # still serving
    growth = rss_mb(pid) - rss0
    slowest = max(worst, key=worst.get)
    print(f"fuzz: {len(cases)} malformed cases x {rounds}: slowest {slowest} {worst[slowest] * 1000:.1f} ms "
          f"(target <= 1000 ms); server RSS growth {growth:.1f} MB (target <= 64 MB)")
    print(f"  not INVALID_ARGUMENT: {sorted(set(wrong)) or 'none'}")


async def main_async(a: argparse.Namespace) -> None:
    with ServerProcess(a.model_dir, "--intra-op-threads", str(a.threads)) as server:
        async with grpc.aio.insecure_channel(f"localhost:{server.port}") as channel:
            stub = pb_grpc.InferenceStub(channel)
            pics = test_images(8 if a.quick else 64)
            await first_word(stub, a.model, pics[0])  # warm up
            if a.fuzz:
                await fuzz(stub, a.model, server.proc.pid, pics[0], 1 if a.quick else 5)
                return
            await latency(stub, a.model, pics, 1 if a.quick else 3)
            await throughput(stub, a.model, pics, 32)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.caption_bench", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default="models")
    p.add_argument("--model", required=True, help="a captioner in --model-dir")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per session")
    p.add_argument("--quick", action="store_true", help="a few images, one round: checks that the bench runs")
    p.add_argument("--fuzz", action="store_true", help="malformed images: latency to INVALID_ARGUMENT, RSS growth")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
