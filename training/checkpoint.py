"""Checkpoints: model, resolved config, tokenizer, optimizer, RNG and loop position, for exact resume."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from service.artifact.tokenizer import Tokenizer
from training.caption_data import CaptionTokenizer
from training.captioner import Captioner
from training.config import TrainConfig, _build
from training.model import CharLM, Classifier
from training.seq2seq import Seq2Seq
from training.subword import TokenizerPair

CHECKPOINT_KEYS = {"config", "model", "model_derived", "tokenizer"}  # what model_of reads


def save_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> None:
    """Write atomically: a crash mid-save never leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """weights_only=True: a checkpoint is data, never code to run.

    Any file that is not a checkpoint written by train() (an ONNX graph, a truncated save, a pickle of
    other objects) is one ValueError naming the file, never torch's multi-line unpickling traceback.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a training checkpoint (not a file torch.save writes)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: not a training checkpoint (it holds objects other than tensors and plain data)") from None
    except (RuntimeError, EOFError, ValueError, AttributeError, ImportError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a training checkpoint ({reason[:200]})") from None
    if not isinstance(ckpt, dict) or not CHECKPOINT_KEYS <= set(ckpt):
        raise ValueError(f"{path}: not a training checkpoint (it holds no {', '.join(sorted(CHECKPOINT_KEYS))})")
    return ckpt


def config_of(ckpt: dict[str, Any]) -> TrainConfig:
    return _build(TrainConfig, ckpt["config"], "checkpoint config")


def model_of(ckpt: dict[str, Any]) -> tuple[CharLM | Classifier | Seq2Seq | Captioner,
                                            Tokenizer | TokenizerPair | CaptionTokenizer]:
    """Rebuild the model (eval mode, weights loaded) and its tokenizer(s) from a checkpoint."""
    cfg = config_of(ckpt)
    mcfg = cfg.model_config(**ckpt["model_derived"])
    model = {"char_lm": CharLM, "classifier": Classifier, "translation": Seq2Seq, "captioning": Captioner}[cfg.task](mcfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    if cfg.task == "translation":
        return model, TokenizerPair.from_dict(ckpt["tokenizer"])
    if cfg.task == "captioning":
        return model, CaptionTokenizer.from_dict(ckpt["tokenizer"])
    return model, Tokenizer.from_dict(ckpt["tokenizer"])
