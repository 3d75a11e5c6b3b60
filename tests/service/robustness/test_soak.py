"""A random mix of streams through a small-chunk server: every one ends right, and nothing leaks."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tests.support.harness import generate, pb

pytestmark = pytest.mark.slow

PROMPT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 3


@pytest.fixture(scope="module")
def chunky(serve):
    """Prompts read 7 characters per call, 3 prompts per call, 8 slots: every path of the scheduler gets used."""
    return serve(prefill_chunk=7, prefill_batch=3, max_streams=8, max_queue=200, max_tokens_limit=5000)


def test_prompts_read_in_chunks_continue_exactly_like_prompts_read_at_once(server, chunky):
    fields = {"model": "tiny-gru", "prompt": PROMPT, "max_tokens": 60, "temperature": 0.0}
    assert generate(chunky.stub, **fields)[0] == generate(server.stub, **fields)[0]
    seeded = {**fields, "temperature": 1.0, "seed": 11}
    assert generate(chunky.stub, **seeded)[0] == generate(server.stub, **seeded)[0]


def test_a_random_mix_of_streams_all_end_right_and_free_their_slots(chunky):
    rng = random.Random(0)
    jobs = []
    for i in range(120):
        jobs.append({
            "fields": {"model": rng.choice(["tiny-lstm", "tiny-gru"]), "prompt": PROMPT[: rng.randint(1, len(PROMPT))],
                       "max_tokens": rng.randint(1, 300), "seed": i, "temperature": rng.choice([0.0, 0.7, 1.0]),
                       "top_k": rng.choice([0, 5]), "flush_chars": rng.choice([0, 1, 3, 50]),
                       "stop": rng.choice([[], ["e"], ["th", "\n\n"]]), "logprobs": rng.random() < 0.3},
            "action": rng.choices(["finish", "cancel", "deadline"], [0.7, 0.2, 0.1])[0]})
        if jobs[-1]["action"] == "deadline":
            jobs[-1]["fields"]["max_tokens"] = 5000  # cannot finish within its 30 ms

    def run(job):
        call = chunky.stub.Generate(pb.GenerateRequest(**job["fields"]), timeout=0.03 if job["action"] == "deadline" else 60)
        try:
            replies = []
            for reply in call:
                replies.append(reply)
                if job["action"] == "cancel":
                    call.cancel()
                    break
            return replies, None
        except grpc.RpcError as err:
            return None, err.code()

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(run, jobs))
    for job, (replies, code) in zip(jobs, results, strict=True):
        f = job["fields"]
        if job["action"] == "finish":
            assert code is None, code
            text, final = "".join(r.text for r in replies), replies[-1].finished
            if final.finish_reason == pb.FINISH_REASON_LENGTH:
                assert len(text) == f["max_tokens"] == final.usage.generated_chars
            else:
                assert final.finish_reason == pb.FINISH_REASON_STOP and f["stop"]
                assert len(text) < final.usage.generated_chars <= f["max_tokens"]
            assert not any(stop in text for stop in f["stop"])  # it ends at the first one, which is not sent
            if f["logprobs"]:
                assert sum(len(r.logprobs) for r in replies) == len(text)
        elif code is not None:
            assert code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)
    finished = [r[0][-1].finished.finish_reason for j, r in zip(jobs, results, strict=True) if j["action"] == "finish"]
    ended = [code for _, code in results if code is not None]
    assert pb.FINISH_REASON_STOP in finished and pb.FINISH_REASON_LENGTH in finished
    assert grpc.StatusCode.DEADLINE_EXCEEDED in ended  # the mix did exercise every way out
    for model in ("tiny-lstm", "tiny-gru"):
        assert chunky.wait_for(lambda m=model: chunky.metric("rnnserve_active_streams", model=m) == 0)
        assert chunky.metric("rnnserve_queued_requests", model=model, method="Generate") == 0
    assert chunky.server.host.n_open == 0
    assert len(generate(chunky.stub, model="tiny-lstm", prompt="A", max_tokens=9)[0]) == 9
