"""The load generator (bench/load.py) for a few seconds against a real server process over the tiny models.

A short soak with the fault mix: every request ends as it was designed to and the load gauges go
back to zero. A short overload: the excess is refused with RESOURCE_EXHAUSTED and every admitted
stream finishes. No timing is asserted.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bench.load import main, run_overload, run_soak
from bench.load_client import Mix, Tally
from bench.load_server import target
from tests.support.harness import patched_run, pb, slowed

pytestmark = [pytest.mark.slow, pytest.mark.process]  # runs the server (or its client) as a process of its own

TEXTS = ["a fine film", "dull and far too long", "not bad at all"]
IDLE = {"active_streams": 0.0, "queued_requests": 0.0}


@pytest.fixture(scope="module")
def process(model_repo):
    """python -m service over the tiny models; deadline requests ask for 20,000 characters."""
    with target(str(model_repo), ["--intra-op-threads", "1", "--max-tokens-limit", "20000"]) as t:
        yield t


def test_a_short_soak_ends_every_request_as_designed_and_leaves_the_server_idle(process):
    mix = Mix(finish=0.4, cancel=0.2, deadline=0.2, invalid=0.2)
    r = run_soak(process, "tiny-lstm", "tiny-sentiment", n=4, rate=20, seconds=6, max_tokens=60, texts=TEXTS,
                 rss_every=1, warmup=0, mix=mix)
    assert r["unexpected_total"] == 0, (r["unexpected"], r["unexpected_details"])
    assert r["server_alive"]
    designed = {"stream:OK", "cancel:CANCELLED", "deadline:DEADLINE_EXCEEDED", "invalid:INVALID_ARGUMENT",
                "classify:OK", "classify-invalid:INVALID_ARGUMENT"}
    assert designed <= set(r["expected"]), r["expected"]  # every kind of request of the mix was made
    assert r["gauges_before"] == IDLE and r["gauges_after"] == IDLE
    assert r["rss_samples"] and r["rss_end_mb"] > 0 and r["chars"] > 0


def test_over_capacity_the_excess_is_refused_and_every_admitted_stream_finishes(model_repo):
    with target(str(model_repo), ["--intra-op-threads", "1", "--max-streams", "2", "--max-queue", "1"]) as t:
        r = run_overload(t, "tiny-lstm", max_streams=2, max_queue=1, excess_rates=[100.0], seconds=3, max_tokens=400)
    assert r["baseline"]["generate_codes"].keys() == {"OK"}
    over = r["overload"][0]
    assert over["excess_refused"] > 0 and over["refusal_excess_n"] == over["excess_refused"]  # each one timed
    assert over["over_admitted"] + over["excess_admitted"] > 0
    assert not over["unexpected"], (over["unexpected"], over["unexpected_details"])  # admitted ones all ended OK
    assert r["gauges_after"] == IDLE


def test_a_waiting_stream_is_admitted_when_the_last_running_one_finishes(serve):
    """Found by the overload run: the decode thread slept with streams waiting and every slot free, until the next request."""
    small = serve(max_streams=1, max_queue=1)
    long = {"model": "tiny-lstm", "prompt": "A", "max_tokens": 1500, "flush_chars": 1}
    with patched_run(small, "tiny-lstm", slowed()):
        running = small.stub.Generate(pb.GenerateRequest(**long), timeout=60)
        next(running)
        waiting = small.stub.Generate(pb.GenerateRequest(**{**long, "max_tokens": 5}), timeout=60)
        assert small.wait_for(lambda: small.metric("rnnserve_queued_requests", model="tiny-lstm", method="Generate") == 1)
        assert sum(len(r.text) for r in running) == 1500 - 1  # it finished by length, nothing was cancelled
        replies = list(waiting)  # before the fix: no character until the deadline, as nothing else arrived
    assert "".join(r.text for r in replies) and replies[-1].finished.finish_reason == pb.FINISH_REASON_LENGTH


def test_unexpected_outcomes_are_counted_and_fail_the_soak(tmp_path):
    tally = Tally(0.0, 1.0)
    tally.outcomes.update({("stream", "OK"): 3, ("cancel", "CANCELLED"): 1, ("stream", "UNAVAILABLE"): 2,
                           ("invalid", "INVALID_ARGUMENT(field not named)"): 1})
    assert tally.unexpected() == Counter({("stream", "UNAVAILABLE"): 2, ("invalid", "INVALID_ARGUMENT(field not named)"): 1})
    # Nothing listens on port 1: every request fails with UNAVAILABLE, none as designed.
    out = tmp_path / "soak.json"
    assert main(["soak", "--target", "localhost:1", "--seconds", "1", "--lm", "tiny-lstm", "--classifier", "tiny-sentiment",
                 "--out", str(out)]) == 1
    r = json.loads(out.read_text())
    assert r["unexpected_total"] > 0 and set(r["generate_codes"]) == {"UNAVAILABLE"}
