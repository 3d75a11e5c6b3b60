"""Session fixtures: small real artifacts exported by the real pipeline, and the check for the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.data import (
    FLICKR8K,
    FLICKR8K_FILES,
    MULTI30K,
    MULTI30K_FILES,
    SHAKESPEARE,
    SST2_SENTENCES,
    need,
    train_and_export,
)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see training/__init__.py: before torch loads


@pytest.fixture
def shared_data() -> None:
    """For tests that read ../shared/data themselves: skipped (failed in CI) when a file is missing."""
    need()


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with a tiny LSTM LM, a tiny GRU LM, a tiny word-level classifier, a tiny translator and
    a tiny captioner.

    Layout: <repo>/<name>/1/{model.onnx, tokenizer.json, meta.json} (a translator: encoder.onnx, decoder.onnx,
    source.tokenizer.json, target.tokenizer.json, meta.json; a captioner: encoder.onnx, decoder.onnx,
    target.tokenizer.json, meta.json).
    """
    need(SHAKESPEARE, SST2_SENTENCES / "stsa.binary.dev", *MULTI30K_FILES, *FLICKR8K_FILES)
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
    _tiny_translator(tmp)
    _tiny_captioner(tmp)
    return tmp / "models"


def _tiny_translator(tmp: Path) -> Path:
    """A German -> English translator trained a few steps on the first 3,000 Multi30k pairs (40 to validate and
    test): its translations are poor, but they are the real export's, so parity tests mean something."""
    corpus = tmp / "multi30k"
    corpus.mkdir()
    for split, n in (("train", 3000), ("val", 40), ("test2016", 40)):
        for lang in ("de", "en"):
            lines = (MULTI30K / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()[:n]
            (corpus / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return train_and_export(tmp, "tiny-translator", {
        "task": "translation", "data.path": corpus / "train", "data.val_path": corpus / "val",
        "data.test_path": corpus / "test2016", "data.level": "bpe", "data.vocab_size": 400, "model.n_embd": 16,
        "model.enc_hidden": 16, "model.dec_hidden": 24, "batch_tokens": 800, "max_steps": 30, "eval_interval": 30,
        "checkpoint_interval": 30, "optim.warmup_steps": 2, "decode.beam_size": 3})


TINY_CAPTIONER = {
    "task": "captioning", "data.path": FLICKR8K, "data.level": "word", "data.limit_images": 12, "data.min_freq": 2,
    "model.n_embd": 16, "model.hidden_size": 24, "model.attn_size": 16, "batch_size": 32, "max_steps": 10,
    "eval_interval": 10, "checkpoint_interval": 10, "optim.warmup_steps": 2, "decode.max_len_a": 0,
    "decode.max_len_b": 12, "decode.beam_size": 3}


def _tiny_captioner(tmp: Path) -> Path:
    """A captioner trained 10 steps on the first 12 Flickr8k training images (12 dev and test images), with the
    real EfficientNet-Lite0 encoder at 128 x 128 (a 4 x 4 grid): its captions are poor, but they are the real
    export's, so parity tests mean something. Its features are cached inside the session's directory."""
    return train_and_export(tmp, "tiny-captioner", {**TINY_CAPTIONER, "data.cache_dir": tmp / "feature-cache"})
