"""Session fixtures: small real artifacts exported by the real pipeline, and the check for the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.data import SHAKESPEARE, SST2_SENTENCES, need, train_and_export

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see training/__init__.py: before torch loads


@pytest.fixture
def shared_data() -> None:
    """For tests that read ../shared/data themselves: skipped (failed in CI) when a file is missing."""
    need()


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with a tiny LSTM LM, a tiny GRU LM and a tiny word-level classifier.

    Layout: <repo>/<name>/1/{model.onnx, tokenizer.json, meta.json}.
    """
    need(SHAKESPEARE, SST2_SENTENCES / "stsa.binary.dev")
    tmp = tmp_path_factory.mktemp("artifacts")
    lm = {"task": "char_lm", "data.path": SHAKESPEARE, "model.n_layer": 2, "model.n_embd": 16,
          "model.hidden_size": 32, "batch_size": 8, "seq_len": 32, "max_steps": 20, "eval_interval": 20,
          "sample_interval": 0, "checkpoint_interval": 20}
    train_and_export(tmp, "tiny-lstm", {**lm, "model.cell": "lstm"})
    train_and_export(tmp, "tiny-gru", {**lm, "model.cell": "gru"})
    train_and_export(tmp, "tiny-sentiment", {
        "task": "classifier", "data.path": SST2_SENTENCES / "stsa.binary.dev",
        "data.val_path": SST2_SENTENCES / "stsa.binary.dev", "data.level": "word", "model.cell": "lstm",
        "model.n_embd": 16, "model.hidden_size": 16, "batch_size": 32, "max_steps": 20, "eval_interval": 20,
        "checkpoint_interval": 20})
    return tmp / "models"
