"""bench.peak: the work counted per decode step, and the GEMM microbenchmarks run and report positive rates."""

from __future__ import annotations

import pytest

from bench import peak
from service.artifact import META_FILE, Meta
from tests.support.data import ROOT


def test_bundled_lstm_decode_step_is_3_8_mflop_per_character():
    meta = Meta.load(ROOT / "models" / "shakespeare-lstm" / "1" / META_FILE)
    # 2 layers x 4 gates x 384 x (64 + 384 | 384 + 384) multiply-adds, plus the 384 x 66 projection
    assert peak.step_flops_per_row(meta) == 2 * (4 * 384 * (64 + 384) + 4 * 384 * (384 + 384) + 384 * 66)
    assert peak.step_flops_per_row(meta) == pytest.approx(3.79e6, rel=0.01)


def test_gemm_microbenchmarks_report_a_rate():
    assert peak.sgemm_gflops(1, n=128, reps=2) > 0
    assert peak.int8_gops(1, n=128, reps=2) > 0
