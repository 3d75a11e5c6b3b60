"""Shared fixtures: paths to ../shared/data and small real artifacts exported by the real pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see training/__init__.py: before torch loads

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"
SST2 = DATA / "sst2"
SST2_SENTENCES = DATA / "sst2-sentences"


def _train_and_export(tmp: Path, name: str, overrides: dict) -> Path:
    """Train a few steps with the real loop, export with the real (self-verifying) exporter."""
    from training.config import load_config
    from training.export import export_checkpoint
    from training.train import train

    # One torch thread: tests share two cores with other processes, where OpenMP spin-waiting
    # threads of two busy processes slow both by 10x or more.
    settings = {"name": name, "out_dir": str(tmp / "runs" / name), "threads": 1, **overrides}
    args = [f"--{k}={v}" for k, v in settings.items()]
    train(load_config(None, args), progress=False)
    out = tmp / "models" / name / "1"
    export_checkpoint(tmp / "runs" / name / "last.pt", out)
    return out


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with a tiny LSTM LM, a tiny GRU LM and a tiny word-level classifier.

    Layout: <repo>/<name>/1/{model.onnx, tokenizer.json, meta.json}.
    """
    tmp = tmp_path_factory.mktemp("artifacts")
    lm = {"task": "char_lm", "data.path": SHAKESPEARE, "model.n_layer": 2, "model.n_embd": 16,
          "model.hidden_size": 32, "batch_size": 8, "seq_len": 32, "max_steps": 20, "eval_interval": 20,
          "sample_interval": 0, "checkpoint_interval": 20}
    _train_and_export(tmp, "tiny-lstm", {**lm, "model.cell": "lstm"})
    _train_and_export(tmp, "tiny-gru", {**lm, "model.cell": "gru"})
    _train_and_export(tmp, "tiny-sentiment", {
        "task": "classifier", "data.path": SST2_SENTENCES / "stsa.binary.dev",
        "data.val_path": SST2_SENTENCES / "stsa.binary.dev", "data.level": "word", "model.cell": "lstm",
        "model.n_embd": 16, "model.hidden_size": 16, "batch_size": 32, "max_steps": 20, "eval_interval": 20,
        "checkpoint_interval": 20})
    return tmp / "models"
