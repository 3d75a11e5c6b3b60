"""Checkpoints: model, resolved config, tokenizer, optimizer, RNG and loop position, for exact resume."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from service.artifact.tokenizer import Tokenizer
from training.config import TrainConfig, _build
from training.model import CharLM, Classifier
from training.seq2seq import Seq2Seq
from training.subword import TokenizerPair


def save_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> None:
    """Write atomically: a crash mid-save never leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """weights_only=True: a checkpoint is data, never code to run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    return torch.load(path, map_location="cpu", weights_only=True)


def config_of(ckpt: dict[str, Any]) -> TrainConfig:
    return _build(TrainConfig, ckpt["config"], "checkpoint config")


def model_of(ckpt: dict[str, Any]) -> tuple[CharLM | Classifier | Seq2Seq, Tokenizer | TokenizerPair]:
    """Rebuild the model (eval mode, weights loaded) and its tokenizer(s) from a checkpoint."""
    cfg = config_of(ckpt)
    mcfg = cfg.model_config(**ckpt["model_derived"])
    model = {"char_lm": CharLM, "classifier": Classifier, "translation": Seq2Seq}[cfg.task](mcfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    if cfg.task == "translation":
        return model, TokenizerPair.from_dict(ckpt["tokenizer"])
    return model, Tokenizer.from_dict(ckpt["tokenizer"])
