"""The measured terms of a replica's worst-case RSS (docs/reliability.md): each one in a fresh server process, as
the peak RSS (VmHWM, reset before the step) above the RSS before it.

    python -m bench.worst_rss --model-dir models              # every term (about 3 minutes)
    python -m bench.worst_rss --model-dir models --terms r0,prefill

Servers run as bench/hostile runs them (the image's allocator settings, one intra-op thread as deploy/ sets it, HTTP
on). Memory, not time: a loaded machine gives the same figures within a few MB. One JSON line per term.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from PIL import Image

from bench.hostile.measure import CLASSIFIER, LMS, OWN_CONNECTION, code_of, counts
from bench.hostile.server import ROOT, Server
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from service.settings import Settings

TRANSLATOR, CAPTIONER = "multi30k-de-en", "flickr8k-captioner"
DEFAULTS = Settings()
DEPLOYED = ["--http-port", "0"]  # HTTP is on in the image


class Measured:
    """A fresh server, its stub, and peaks measured around steps."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.server = Server(args.model_dir, DEPLOYED, args.memory_limit_mb)
        self.channel = grpc.insecure_channel(self.server.target)
        self.stub = pb_grpc.InferenceStub(self.channel)

    def peak_above(self, step: Callable[[], object]) -> tuple[float, float, object]:
        """(RSS before, peak RSS during `step` above it, what step returned), in MB."""
        time.sleep(0.5)
        before = self.server.status("VmRSS")
        Path(f"/proc/{self.server.proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        out = step()
        return before, self.server.status("VmHWM") - before, out

    def close(self) -> None:
        self.channel.close()
        self.server.close()


def report(term: str, **figures) -> None:
    print(json.dumps({"term": term, **{k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()}}),
          flush=True)


def at_once(n: int, target: str, call: Callable[[pb_grpc.InferenceStub], str]) -> dict[str, int]:
    """n calls at once, each on a connection of its own (as nginx sends them): their status codes."""
    def one() -> str:
        with grpc.insecure_channel(target, options=OWN_CONNECTION) as channel:
            return call(pb_grpc.InferenceStub(channel))

    with ThreadPoolExecutor(n) as pool:
        return counts([f.result() for f in [pool.submit(one) for _ in range(n)]])


def r0(args: argparse.Namespace) -> None:
    m = Measured(args)
    try:
        time.sleep(3)
        report("r0", rss_idle_mb=m.server.status("VmRSS"), peak_while_loading_mb=m.server.status("VmHWM"))
    finally:
        m.close()


def classify(args: argparse.Namespace) -> None:
    """One model call of classify_max_batch_tokens: 64 texts of 256 tokens."""
    m = Measured(args)
    try:
        code_of(m.stub.Classify, pb.ClassifyRequest(model=CLASSIFIER, texts=["fine"]), timeout=60)
        n = DEFAULTS.classify_max_batch_tokens // 64
        texts = ["dull " + "!" * (n - 2)] * 64  # "dull", then one token per "!"
        before, peak, code = m.peak_above(lambda: code_of(m.stub.Classify, pb.ClassifyRequest(
            model=CLASSIFIER, texts=texts), timeout=600))
        report("classify call", model=CLASSIFIER, tokens=64 * n, code=code, rss_before_mb=before, peak_above_mb=peak,
               per_token_kb=1024 * peak / (64 * n))
    finally:
        m.close()


def _prefill(args: argparse.Namespace, lm: str) -> None:
    m = Measured(args)
    try:
        code_of(m.stub.Generate, pb.GenerateRequest(model=lm, prompt="a", max_tokens=1), timeout=60)
        prompt = ("ROMEO: " * DEFAULTS.max_prompt_chars)[:DEFAULTS.max_prompt_chars]
        request = pb.GenerateRequest(model=lm, prompt=prompt, max_tokens=1, seed=1)
        before, peak, codes = m.peak_above(lambda: at_once(DEFAULTS.prefill_batch, m.server.target, lambda stub: code_of(
            stub.Generate, request, timeout=600)))
        tokens = DEFAULTS.prefill_batch * DEFAULTS.prefill_chunk
        report("prefill", model=lm, prompts=DEFAULTS.prefill_batch, chars=DEFAULTS.max_prompt_chars, codes=codes,
               call_tokens=tokens, rss_before_mb=before, peak_above_mb=peak, per_token_kb=1024 * peak / tokens)
    finally:
        m.close()


def prefill(args: argparse.Namespace) -> None:
    """prefill_batch prompts of max_prompt_chars read at once: prefill calls of prefill_batch x prefill_chunk."""
    for lm in LMS:
        _prefill(args, lm)


def _source(stub) -> str:
    """The longest run of one common word the translator takes (max_source_tokens of its own tokens)."""
    for words in range(DEFAULTS.max_source_tokens, 0, -5):
        text = " ".join(["ein"] * words)
        if code_of(stub.Translate, pb.TranslateRequest(model=TRANSLATOR, text=text, max_tokens=1), timeout=60) == "OK":
            return text
    raise RuntimeError("no source the translator takes")


def translate(args: argparse.Namespace) -> None:
    """max_streams + max_queue translations of the longest source at once: encoder calls and every memory held."""
    m = Measured(args)
    try:
        text = _source(m.stub)
        n = DEFAULTS.max_streams + DEFAULTS.max_queue
        request = pb.TranslateRequest(model=TRANSLATOR, text=text, max_tokens=64)
        before, peak, codes = m.peak_above(lambda: at_once(n, m.server.target, lambda stub: code_of(
            stub.Translate, request, timeout=600)))
        report("translate", model=TRANSLATOR, requests=n, source_words=len(text.split()), codes=codes,
               rss_before_mb=before, peak_above_mb=peak)
    finally:
        m.close()


def _largest_image() -> bytes:
    """A PNG of max_image_pixels (square, a gradient that compresses under max_image_bytes)."""
    side = int(DEFAULTS.max_image_pixels ** 0.5)
    img = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    out = io.BytesIO()
    img.save(out, "PNG", optimize=True)
    return out.getvalue()


def caption(args: argparse.Namespace) -> None:
    """Largest images, more at once than image_decode_threads decode: the decoded images and the encoder's call."""
    m = Measured(args)
    try:
        small = io.BytesIO()
        Image.new("RGB", (128, 128), "gray").save(small, "PNG")
        code_of(m.stub.Caption, pb.CaptionRequest(model=CAPTIONER, image=small.getvalue(), max_tokens=4), timeout=60)
        image = _largest_image()
        request = pb.CaptionRequest(model=CAPTIONER, image=image, max_tokens=16)
        n = 2 * DEFAULTS.image_decode_threads
        before, peak, codes = m.peak_above(lambda: at_once(n, m.server.target, lambda stub: code_of(
            stub.Caption, request, timeout=600)))
        report("caption", model=CAPTIONER, requests=n, image_pixels=DEFAULTS.max_image_pixels, image_bytes=len(image),
               codes=codes, rss_before_mb=before, peak_above_mb=peak)
    finally:
        m.close()


def trace(args: argparse.Namespace) -> None:
    """Each LM's first trace (its tracer, kept while the version is loaded), then max_traces traces of the most
    work at once on the largest LM, each read to its end."""
    m = Measured(args)
    try:
        for lm in LMS:
            request = pb.TraceRequest(model=lm, text="e" * 16, layers=[0], units=[0])
            before, peak, code = m.peak_above(lambda r=request: code_of(m.stub.Trace, r, timeout=600))
            report("trace, first of a version", model=lm, code=code, rss_before_mb=before,
                   kept_mb=m.server.status("VmRSS") - before)
        chars = DEFAULTS.max_trace_chars
        request = pb.TraceRequest(model=LMS[0], text="e" * chars, layers=[1],
                                  units=range(min(384, DEFAULTS.max_trace_work // chars)))
        before, peak, codes = m.peak_above(lambda: at_once(DEFAULTS.max_traces, m.server.target, lambda stub: code_of(
            stub.Trace, request, timeout=600)))
        report("trace calls", model=LMS[0], traces=DEFAULTS.max_traces, chars=chars, columns=len(request.units),
               codes=codes, rss_before_mb=before, peak_above_mb=peak)
    finally:
        m.close()


TERMS = {"r0": r0, "classify": classify, "prefill": prefill, "translate": translate, "caption": caption,
         "trace": trace}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.worst_rss", description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model-dir", default=str(ROOT / "models"))
    ap.add_argument("--terms", default=",".join(TERMS), help=f"comma-separated, of {', '.join(TERMS)}")
    ap.add_argument("--memory-limit-mb", type=int, default=4096, help="the servers' memory cgroup (well above it all)")
    args = ap.parse_args()
    for name in args.terms.split(","):
        TERMS[name](args)


if __name__ == "__main__":
    main()
