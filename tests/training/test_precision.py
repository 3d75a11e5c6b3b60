"""bf16 training (CPU autocast): a bf16-trained model learns, exports and verifies in fp32; a CPU that cannot run
it is a config error before training, not a oneDNN traceback mid-run."""

from __future__ import annotations

import math

import pytest
import torch

from tests.support.data import SHAKESPEARE
from training.config import load_config
from training.export import export_checkpoint
from training.train import train


def _args(tmp_path, cell: str, precision: str) -> list[str]:
    return ["--task=char_lm", f"--data.path={SHAKESPEARE}", "--threads=1", f"--model.cell={cell}", "--model.n_layer=2",
            "--model.n_embd=8", "--model.hidden_size=24", "--batch_size=8", "--seq_len=16", "--max_steps=40",
            "--eval_interval=40", "--sample_interval=0", "--optim.warmup_steps=5", "--optim.lr=0.01",
            f"--precision={precision}", f"--out_dir={tmp_path / precision}"]


def test_a_bf16_trained_gru_learns_as_fp32_does_and_exports_verified(tmp_path):
    ckpt = train(load_config(None, _args(tmp_path, "gru", "bf16")), progress=False)
    fp32 = train(load_config(None, _args(tmp_path, "gru", "fp32")), progress=False)
    assert ckpt["config"]["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in ckpt["model"].values())  # master weights stay fp32
    assert ckpt["metrics"]["val_loss"] < math.log(65) - 0.5  # it learned (uniform over 65 characters: 4.17)
    assert ckpt["metrics"]["val_loss"] == pytest.approx(fp32["metrics"]["val_loss"], abs=0.05)  # as fp32 did
    meta = export_checkpoint(tmp_path / "bf16" / "last.pt", tmp_path / "m" / "1")
    checks = meta.evaluation["export_checks"]
    assert checks["max_abs_diff_vs_torch"] < 1e-4 and checks["prefill_vs_steps_max_abs_diff"] < 1e-5
    assert meta.training["config"]["precision"] == "bf16"


def test_bf16_lstm_trains_or_is_refused_before_training(tmp_path):
    """oneDNN's LSTM runs bf16 only where the CPU has it (AVX-512 BF16/AMX): elsewhere, one clear config error."""
    try:
        ckpt = train(load_config(None, _args(tmp_path, "lstm", "bf16")), progress=False)
    except ValueError as err:
        assert "precision 'bf16' does not run this model on this CPU" in str(err) and "use 'fp32'" in str(err)
        assert not (tmp_path / "bf16" / "last.pt").exists()
    else:
        assert math.isfinite(ckpt["metrics"]["val_loss"])
        export_checkpoint(tmp_path / "bf16" / "last.pt", tmp_path / "m" / "1")


def test_unknown_precision_is_refused(tmp_path):
    with pytest.raises(ValueError, match="precision must be one of"):
        load_config(None, _args(tmp_path, "gru", "fp16"))


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(tmp_path, monkeypatch, native):
    """A recipe that says "auto" runs bf16 on a CPU with AVX-512 BF16 / AMX and fp32 elsewhere, and its
    config (hence its checkpoint) records which one ran."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    cfg = load_config(None, _args(tmp_path, "lstm", "auto"))
    assert cfg.precision == ("bf16" if native else "fp32")
