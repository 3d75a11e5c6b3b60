"""The load generator's clients (grpc.aio): timed Generate streams, an open-loop Classify rate, a soak's fault mix.

Every request is made for a purpose (its design) that says which final status codes it may end
with; anything else is counted as unexpected. Characters are timed as they arrive: a message of
k characters gives its first character the gap since the previous message and the other k - 1 a
gap of zero, which is what a reader of the stream sees.
"""

from __future__ import annotations

import asyncio
import random
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc

# design -> the final status codes a request of that design is built to get
EXPECTED: dict[str, frozenset[str]] = {
    "stream": frozenset({"OK"}),
    "classify": frozenset({"OK"}),
    "over": frozenset({"OK", "RESOURCE_EXHAUSTED"}),  # overload: a stream that keeps the server full, may be refused
    "excess": frozenset({"OK", "RESOURCE_EXHAUSTED"}),  # overload: one beyond the limits, refused unless a slot was free
    # A client slower than the server can get its whole stream, final message included, at once: then it
    # finished before the client could cancel it.
    "cancel": frozenset({"CANCELLED", "OK(finished first)"}),
    "deadline": frozenset({"DEADLINE_EXCEEDED"}),
    "invalid": frozenset({"INVALID_ARGUMENT"}),
    "classify-invalid": frozenset({"INVALID_ARGUMENT"}),
}

# No request here should take this long; one that does (a stuck stream) is reported as
# DEADLINE_EXCEEDED, which no design expects, rather than hanging the run.
STUCK_S = 300.0

# (field named in the error, how to spoil a valid request): each must get INVALID_ARGUMENT naming its field
INVALID_GENERATE: tuple[tuple[str, Callable[[pb.GenerateRequest], None]], ...] = (
    ("prompt", lambda r: r.ClearField("prompt")),
    ("temperature", lambda r: setattr(r, "temperature", -1.0)),
    ("temperature", lambda r: setattr(r, "temperature", float("nan"))),
    ("top_p", lambda r: setattr(r, "top_p", 1.5)),
    ("top_k", lambda r: setattr(r, "top_k", -3)),
    ("max_tokens", lambda r: setattr(r, "max_tokens", -1)),
    ("stop", lambda r: r.stop.extend(["a", "b", "c", "d", "e", "f", "g", "h"])),
    ("flush_chars", lambda r: setattr(r, "flush_chars", 1 << 20)),
)


@dataclass
class Tally:
    """What the clients of one run saw. Timings count only inside the window [start, end)."""

    start: float
    end: float
    gaps: array = field(default_factory=lambda: array("d"))  # per character: seconds since the previous one
    chars: int = 0
    messages: int = 0
    ttfc: list[float] = field(default_factory=list)  # send -> first character, per stream
    classify_latency: list[float] = field(default_factory=list)  # scheduled send -> reply
    classify_ok: int = 0
    refusals: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # design -> send -> refusal
    outcomes: Counter = field(default_factory=Counter)  # (design, final code) -> requests
    details: dict[tuple[str, str], str] = field(default_factory=dict)  # the first error message of each outcome

    def inside(self, t: float) -> bool:
        return self.start <= t < self.end

    def unexpected(self) -> Counter:
        return Counter({k: n for k, n in self.outcomes.items() if k[1] not in EXPECTED[k[0]]})

    def expected(self) -> Counter:
        return Counter({k: n for k, n in self.outcomes.items() if k[1] in EXPECTED[k[0]]})

    def codes(self, method: str) -> dict[str, int]:
        """Final status codes of one method ("Generate" or "Classify"), all designs together."""
        out: Counter = Counter()
        for (design, code), n in self.outcomes.items():
            if design.startswith("classify") == (method == "Classify"):
                out[code] += n
        return dict(out)

    def summary(self) -> dict:
        """chars/s, inter-char and classify percentiles (ms), TTFC, refusals, codes: the figures of one run."""
        seconds = self.end - self.start
        r = {"seconds": seconds, "chars": self.chars, "chars_per_s": self.chars / seconds,
             "chars_per_message": self.chars / max(self.messages, 1),
             "generate_codes": self.codes("Generate"), "classify_codes": self.codes("Classify"),
             "unexpected": {f"{d}:{c}": n for (d, c), n in self.unexpected().items()},
             "unexpected_details": {f"{d}:{c}": self.details.get((d, c), "") for d, c in self.unexpected()}}
        refusals = [x for design in self.refusals.values() for x in design]
        for key, values in (("inter_char", self.gaps), ("ttfc", self.ttfc), ("classify", self.classify_latency),
                            ("refusal", refusals), *((f"refusal_{d}", v) for d, v in self.refusals.items())):
            r[f"{key}_n"] = len(values)
            r[f"{key}_p50_ms"], r[f"{key}_p99_ms"] = percentiles_ms(values)
        r["classify_per_s"] = self.classify_ok / seconds
        return r


def percentiles_ms(values: list[float] | array) -> tuple[float | None, float | None]:
    if not len(values):
        return None, None
    p50, p99 = np.percentile(np.frombuffer(values) if isinstance(values, array) else values, [50, 99])
    return float(p50) * 1e3, float(p99) * 1e3


def stream_request(model: str, max_tokens: int, seed: int) -> pb.GenerateRequest:
    """flush_chars=1: every character leaves the server as soon as it is made, so each one can be timed."""
    return pb.GenerateRequest(model=model, prompt="ROMEO:\n", max_tokens=max_tokens, temperature=1.0, seed=seed,
                              flush_chars=1)


async def stream_once(stub: pb_grpc.InferenceStub, tally: Tally, req: pb.GenerateRequest, design: str,
                      timeout: float | None = None, cancel_after: int | None = None, field_name: str = "",
                      sent: float | None = None) -> str:
    """One Generate to its end (or cancelled after `cancel_after` characters); returns its final code.

    Its times run from `sent` (an open loop's scheduled time) or else from now.
    """
    t0 = time.perf_counter() if sent is None else sent
    last, got = None, 0
    call = stub.Generate(req, timeout=STUCK_S if timeout is None else timeout)
    try:
        async for reply in call:
            now = time.perf_counter()
            if n := len(reply.text):
                if last is None:
                    if tally.inside(t0):
                        tally.ttfc.append(now - t0)
                elif tally.inside(now):
                    tally.gaps.append(now - last)
                    tally.gaps.extend([0.0] * (n - 1))
                if tally.inside(now):
                    tally.chars += n
                    tally.messages += 1
                last, got = now, got + n
            if cancel_after is not None and got >= cancel_after and not reply.HasField("finished"):
                call.cancel()
                break
        code = (await call.code()).name
        if cancel_after is not None and code == "OK":
            code = "OK(finished first)"
    except grpc.aio.AioRpcError as err:
        code = err.code().name
        if code == "RESOURCE_EXHAUSTED":
            tally.refusals[design].append(time.perf_counter() - t0)
        if code == "INVALID_ARGUMENT" and field_name and not (err.details() or "").startswith(field_name):
            code = "INVALID_ARGUMENT(field not named)"
        tally.details.setdefault((design, code), err.details() or "")
    tally.outcomes[(design, code)] += 1
    return code


async def hold_streams(stub: pb_grpc.InferenceStub, tally: Tally, n: int, model: str, max_tokens: int,
                       design: str = "stream", retry_s: float = 0.05) -> None:
    """n workers, each running one stream after another until the window ends; a refused one retries after ~retry_s.

    No stream is cut at the end: the last ones run to their finish outside the window.
    """
    async def worker(i: int) -> None:
        k = 0
        while time.perf_counter() < tally.end:
            code = await stream_once(stub, tally, stream_request(model, max_tokens, seed=i * 1_000_003 + k), design)
            k += 1
            if code == "RESOURCE_EXHAUSTED":
                await asyncio.sleep(retry_s * (0.5 + random.random()))

    await asyncio.gather(*(worker(i) for i in range(n)))


async def classify_once(stub: pb_grpc.InferenceStub, tally: Tally, req: pb.ClassifyRequest, design: str,
                        due: float) -> None:
    try:
        await stub.Classify(req, timeout=STUCK_S)
        code = "OK"
        tally.classify_latency.append(time.perf_counter() - due)
        tally.classify_ok += 1
    except grpc.aio.AioRpcError as err:
        code = err.code().name
        if code == "INVALID_ARGUMENT" and not (err.details() or "").startswith("texts"):
            code = "INVALID_ARGUMENT(field not named)"
        tally.details.setdefault((design, code), err.details() or "")
    tally.outcomes[(design, code)] += 1


async def open_loop(tally: Tally, rate: float, fire: Callable[[int, float], Awaitable[object]]) -> None:
    """fire(i, due) is started at due = start + i / rate whether or not earlier calls have answered.

    Latencies run from `due`, so a client or server that falls behind shows up in them rather
    than silently lowering the rate.
    """
    pending: set[asyncio.Task] = set()
    i = 0
    while (due := tally.start + i / rate) < tally.end:
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(fire(i, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
        i += 1
    await asyncio.gather(*pending)


async def classify_rate(stub: pb_grpc.InferenceStub, tally: Tally, model: str, texts: list[str], rate: float,
                        invalid: float = 0.0, rng: random.Random | None = None) -> None:
    """Classify at `rate` requests/s, open loop, one text each; a fraction `invalid` of them carry no texts."""
    rng = rng or random.Random(0)

    def fire(i: int, due: float) -> Awaitable[None]:
        bad = rng.random() < invalid
        req = pb.ClassifyRequest(model=model, texts=[] if bad else [texts[i % len(texts)]])
        return classify_once(stub, tally, req, "classify-invalid" if bad else "classify", due)

    await open_loop(tally, rate, fire)


async def excess_rate(stub: pb_grpc.InferenceStub, tally: Tally, model: str, max_tokens: int, rate: float) -> None:
    """Generate at `rate` requests/s, open loop, at a server already full: each should be refused at once."""
    def fire(i: int, due: float) -> Awaitable[str]:
        return stream_once(stub, tally, stream_request(model, max_tokens, seed=(1 << 40) + i), "excess", sent=due)

    await open_loop(tally, rate, fire)


@dataclass(frozen=True)
class Mix:
    """The soak's stream workers: what share of their requests finish, are cancelled, time out or are invalid."""

    finish: float = 0.7
    cancel: float = 0.1
    deadline: float = 0.1
    invalid: float = 0.1
    deadline_tokens: int = 20_000  # far more than fits in a tiny deadline, so it cannot finish first


async def soak_streams(stub: pb_grpc.InferenceStub, tally: Tally, n: int, model: str, max_tokens: int,
                       mix: Mix, seed: int = 0) -> None:
    """n workers drawing each request's design from the mix until the window ends."""
    designs, weights = ("stream", "cancel", "deadline", "invalid"), (mix.finish, mix.cancel, mix.deadline, mix.invalid)

    async def worker(i: int) -> None:
        rng = random.Random(seed * 7919 + i)
        k = 0
        while time.perf_counter() < tally.end:
            design = rng.choices(designs, weights)[0]
            req = stream_request(model, max_tokens, seed=i * 1_000_003 + k)
            k += 1
            if design == "stream":
                await stream_once(stub, tally, req, design)
            elif design == "cancel":
                await stream_once(stub, tally, req, design, cancel_after=rng.randint(1, max_tokens // 2))
            elif design == "deadline":
                req.max_tokens = mix.deadline_tokens
                await stream_once(stub, tally, req, design, timeout=rng.uniform(0.005, 0.05))
            else:
                name, spoil = rng.choice(INVALID_GENERATE)
                spoil(req)
                await stream_once(stub, tally, req, design, field_name=name)

    await asyncio.gather(*(worker(i) for i in range(max(n, 1))))
