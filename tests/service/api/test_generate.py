"""Generate through a real channel: chunked streaming, O(1) steps, seeded determinism, stop sequences."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest

from service.artifact import MODEL_FILE, Meta
from service.artifact.tokenizer import Tokenizer
from tests.support.harness import generate, patched_run, pb, slowed


def test_streams_text_in_chunks_then_a_final_message(server):
    # Steps of >= 2 ms: the 50 characters take >= 100 ms, so they cannot all be ready at one delivery
    # (every 1 ms) even when a loaded machine delays the event loop by a few ms.
    with patched_run(server, "tiny-lstm", slowed(0.002)):
        text, replies = generate(server.stub, model="tiny-lstm", prompt="ROMEO:", max_tokens=50, seed=3, flush_chars=7,
                                 flush_ms=10_000)
    assert len(text) == 50 and len(replies) >= 2
    assert len(replies[0].text) == 1  # the first character at once, alone (the next chunk is >= 14 ms later)
    assert all(len(r.text) % 7 == 0 and not r.HasField("finished") for r in replies[1:-1])  # then whole chunks
    final = replies[-1].finished
    assert final.finish_reason == pb.FINISH_REASON_LENGTH and final.version == 1
    u = final.usage
    assert (u.prompt_chars, u.generated_chars) == (6, 50)
    assert 0 < u.queue_time_s <= u.time_to_first_char_s <= u.total_time_s


def test_the_first_character_is_sent_at_once_not_at_the_next_delivery_poll(serve):
    slow_poll = serve(deliver_ms=600_000)  # text leaves the decode thread at the loop's poll, here 10 minutes apart
    replies = slow_poll.stub.Generate(pb.GenerateRequest(model="tiny-lstm", prompt="ROMEO:", max_tokens=1000, seed=3,
                                                         flush_ms=10_000), timeout=60)
    first = next(replies)
    replies.cancel()
    assert len(first.text) == 1 and not first.HasField("finished")  # before any later step could add to it
    text, replies = generate(slow_poll.stub, model="tiny-lstm", prompt="ROMEO:", max_tokens=1, seed=3)
    assert len(text) == 1 and len(replies) == 1 and replies[0].HasField("finished")


def test_flush_by_time_and_per_character_logprobs(server):
    _, replies = generate(server.stub, model="tiny-lstm", prompt="a", max_tokens=3000, seed=1, flush_chars=4096, flush_ms=1)
    assert len(replies) > 2  # 3000 characters never reach flush_chars: only the 1 ms clock can have split them
    _, replies = generate(server.stub, model="tiny-lstm", prompt="a", max_tokens=20, seed=1, flush_chars=1, logprobs=True)
    assert sum(len(r.text) for r in replies) == 20
    assert all(len(r.logprobs) == len(r.text) for r in replies)
    lps = [x for r in replies for x in r.logprobs]
    assert all(x <= 0 for x in lps) and any(x < 0 for x in lps)


def _greedy_by_rerunning(model_dir, prompt: str, n: int) -> str:
    """The naive reference: run the whole text through a fresh state for every new character."""
    meta, tok = Meta.load(model_dir / "meta.json"), Tokenizer.load(model_dir / "tokenizer.json")
    sess = ort.InferenceSession(str(model_dir / MODEL_FILE), providers=["CPUExecutionProvider"])
    ids = list(tok.encode(prompt))
    for _ in range(n):
        feed = {"tokens": np.array([ids], np.int64)}
        feed.update({s.input: np.zeros((s.n_layer, 1, s.hidden_size), np.float32) for s in meta.state})
        logits = sess.run(None, feed)[0][0, -1]
        logits[tok.unk_id] = -np.inf  # the server never picks the unknown character
        ids.append(int(logits.argmax()))
    return tok.decode(ids[len(prompt):])


@pytest.mark.parametrize("name", ["tiny-lstm", "tiny-gru"])
def test_one_prefill_then_one_step_per_character_with_carried_state(server, model_repo, name):
    runner = server.server.host.repo.get(name).runner
    calls, run = [], runner.run

    def spy(tokens, state):
        calls.append(tokens.shape)
        return run(tokens, state)

    runner.run = spy
    try:
        prompt = "First Citizen:\nBefore we proceed any further, hear me speak."
        text, _ = generate(server.stub, model=name, prompt=prompt, max_tokens=40, temperature=0)
    finally:
        del runner.run
    assert calls[0] == (1, len(prompt) - 1)  # the prompt, minus its last character, in one call
    assert calls[1:] == [(1, 1)] * 40  # then one single-character step per generated character
    assert text == _greedy_by_rerunning(model_repo / name / "1", prompt, 40)


def _seeded(seed: int, **extra) -> dict:
    return {"model": "tiny-lstm", "prompt": "KING RICHARD:\n", "max_tokens": 150, "seed": seed, "temperature": 1.0,
            "flush_chars": 5, **extra}


def test_seeded_stream_is_identical_alone_and_among_63_others(server):
    alone, _ = generate(server.stub, **_seeded(42))
    assert generate(server.stub, **_seeded(42))[0] == alone
    assert generate(server.stub, **_seeded(43))[0] != alone  # the seed matters, so the comparisons below can fail

    crowd = [_seeded(1000 + i, prompt="x" * (1 + i % 13), max_tokens=100 + 7 * i, top_k=i % 5, top_p=0.5 + (i % 6) / 12,
                     temperature=(i % 4) / 2) for i in range(63)]
    crowd.insert(31, _seeded(42))
    before = server.metric("rnnserve_decode_batch_size_bucket", model="tiny-lstm", le="32.0")
    before_count = server.metric("rnnserve_decode_batch_size_count", model="tiny-lstm")
    with ThreadPoolExecutor(64) as pool:
        texts = list(pool.map(lambda fields: generate(server.stub, **fields)[0], crowd))
    assert texts[31] == alone
    assert [len(t) for t in texts] == [f["max_tokens"] for f in crowd]
    steps = server.metric("rnnserve_decode_batch_size_count", model="tiny-lstm") - before_count
    small = server.metric("rnnserve_decode_batch_size_bucket", model="tiny-lstm", le="32.0") - before
    assert steps < sum(f["max_tokens"] for f in crowd) / 8  # the streams really were decoded together
    assert small < steps  # some steps advanced more than 32 streams at once


def test_stop_sequences_end_the_stream_and_are_not_returned(server):
    greedy = {"model": "tiny-lstm", "prompt": "To be, or not to be", "max_tokens": 200, "temperature": 0}
    full, _ = generate(server.stub, **greedy)
    stop = full[60:63]
    cut = full.find(stop)
    for flush_chars in (1, 2, 64):  # the stop may straddle chunk boundaries: held back, never half-sent
        text, replies = generate(server.stub, **greedy, stop=["\u00a7never", stop], flush_chars=flush_chars)
        assert text == full[:cut]
        final = replies[-1].finished
        assert final.finish_reason == pb.FINISH_REASON_STOP
        assert final.usage.generated_chars == cut + len(stop)
    text, replies = generate(server.stub, **greedy, stop=["\u00a7never"])
    assert text == full and replies[-1].finished.finish_reason == pb.FINISH_REASON_LENGTH


def test_characters_outside_the_vocabulary_map_to_unknown(server):
    text, replies = generate(server.stub, model="tiny-lstm", prompt="\u65e5\u672c\u8a9e", max_tokens=5, seed=0)
    assert len(text) == 5 and replies[-1].finished.usage.prompt_chars == 3
