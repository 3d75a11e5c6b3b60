"""LMRunner.prefill on the bundled char LM's two graphs: the LSTM op's reads a prompt in one call, the unrolled int8
cell's a character per call (its ONNX Loop costs more per character than a whole T = 1 call), with the same state."""

from __future__ import annotations

import numpy as np
import pytest

from service.models.repository import load_model
from tests.support.data import ROOT

LM = ROOT / "models" / "shakespeare-lstm"


@pytest.mark.parametrize("version, unrolled", [(1, False), (2, True)])
def test_prefill_reads_an_unrolled_graph_a_character_per_call_and_ends_in_the_state_of_one_call(version, unrolled):
    runner = load_model(LM / str(version), "shakespeare-lstm", version, 1).runner
    assert runner.unrolled is unrolled
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, runner.vocab_size, (3, 7))  # (B, T)
    state = [rng.uniform(-0.9, 0.9, x.shape).astype(np.float32) for x in runner.zero_state(3)]
    calls, run = [], runner.run
    runner.run = lambda t, s: calls.append(t.shape) or run(t, s)
    try:
        read = runner.prefill(tokens, state)
    finally:
        del runner.run
    assert calls == ([(3, 1)] * 7 if unrolled else [(3, 7)])
    _, whole = runner.run(tokens, state)
    # bit for bit: the int8 cell computes prefill == steps exactly (checked at quantize), so the same text follows
    assert all(np.array_equal(a, b) for a, b in zip(read, whole, strict=True))
