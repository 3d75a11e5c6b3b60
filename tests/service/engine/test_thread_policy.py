"""The decode thread policy picks the configured thread count for each batch size (no timing involved)."""

from __future__ import annotations

import numpy as np
import pytest

from service.models.thread_policy import BandedRunner, ThreadPolicy, decode_policy
from service.settings import Settings


def test_bands_pick_threads_by_batch_size():
    policy = ThreadPolicy.parse("1:1,16:2,128:4")
    assert [policy.threads(b) for b in (1, 2, 15, 16, 64, 127, 128, 256)] == [1, 1, 1, 2, 2, 2, 4, 4]


@pytest.mark.parametrize("text", ["", "2:1", "1:1,1:2", "1:1,16:0", "1-1", "1:1,8:2,4:3", "1:x"])
def test_a_malformed_policy_is_refused_naming_the_setting(text):
    with pytest.raises(ValueError, match="decode_threads_by_batch"):
        Settings(decode_threads_by_batch=text or ",")


def test_a_pinned_count_wins_then_the_setting_then_meta_json():
    recorded = {"intra_op_threads_by_batch": {"1": 1, "32": 2}}
    assert decode_policy("1:2", 3, recorded) is None  # --intra-op-threads 3: one session of 3 threads
    assert decode_policy("1:2", 0, recorded).bands == ((1, 2),)
    assert decode_policy("", 0, recorded).bands == ((1, 1), (32, 2))
    assert decode_policy("", 0, {}) is None
    with pytest.raises(ValueError, match="intra_op_threads_by_batch"):
        ThreadPolicy.from_runtime({"intra_op_threads_by_batch": {"1": "two"}})


class Recorder:
    """Stands in for an LMRunner made with `threads`: records the batch sizes it ran."""

    def __init__(self, threads: int) -> None:
        self.threads, self.batches, self.vocab_size = threads, [], 7

    def run(self, tokens: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        self.batches.append(tokens.shape[0])
        return np.zeros((tokens.shape[0], 1, 7), np.float32), state


def test_banded_runner_runs_each_batch_on_its_bands_session():
    made = []
    runner = BandedRunner(ThreadPolicy.parse("1:1,16:2,64:1"), lambda t: made.append(Recorder(t)) or made[-1])
    assert sorted(r.threads for r in made) == [1, 2]  # one session per thread count, not per band
    for b in (1, 15, 16, 63, 64, 200):
        runner.run(np.zeros((b, 1), np.int64), [])
    by_threads = {r.threads: r.batches for r in made}
    assert by_threads == {1: [1, 15, 64, 200], 2: [16, 63]}
    assert runner.vocab_size == 7  # everything but run() is the first band's runner
