"""What eval and sample accept: a training checkpoint (.pt) or a model artifact directory, found from what the user typed.

A user has models/<name>/<version>/ (the artifact the server loads) more often than the checkpoint it
came from, so both are models here. Every wrong path ends in one ValueError that says what the path is
and what to pass instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.artifact import META_FILE, MODEL_FILE, TOKENIZER_FILE, Meta
from service.artifact.tokenizer import Tokenizer
from training.artifact_model import OnnxCharLM, OnnxClassifier, open_artifact
from training.checkpoint import config_of, load_checkpoint, model_of
from training.config import TrainConfig, _build
from training.model import CharLM, Classifier
from training.seq2seq import Seq2Seq
from training.subword import TokenizerPair

ARTIFACT_FILES = (MODEL_FILE, META_FILE, TOKENIZER_FILE)


@dataclass
class Opened:
    model: CharLM | Classifier | Seq2Seq | OnnxCharLM | OnnxClassifier
    tokenizer: Tokenizer | TokenizerPair  # a translation checkpoint's: its source and target tokenizers
    config: TrainConfig | None  # the training config, which names the data; None if an artifact does not record it
    kind: str  # "char_lm", "classifier" or (a checkpoint's) "translation"
    source: str  # "checkpoint" or "artifact"


def _artifact_dir(path: Path) -> Path | None:
    """The artifact directory `path` names: itself, or the directory of one of its three files."""
    if path.is_dir() and (path / META_FILE).is_file():
        return path
    if path.is_file() and path.name in ARTIFACT_FILES and (path.parent / META_FILE).is_file():
        return path.parent
    return None


def _refuse_directory(path: Path) -> None:
    versions = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit() and (p / META_FILE).is_file())
    if versions:
        raise ValueError(f"{path} is a model with versions {versions}: pass one, e.g. {path / str(versions[-1])}")
    if (path / "last.pt").is_file():
        raise ValueError(f"{path} is a training run: pass its checkpoint {path / 'last.pt'}")
    raise ValueError(f"{path} is a directory but not a model (no {META_FILE}) nor a training run (no last.pt)")


def _recorded_config(meta: Meta) -> TrainConfig | None:
    raw: Any = meta.training.get("config")
    return _build(TrainConfig, raw, "meta.json training.config") if isinstance(raw, dict) else None


def open_model(path: str | Path, threads: int = 1) -> Opened:
    """A checkpoint as torch modules, or an artifact directory (or one of its files) run by ONNX Runtime."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such checkpoint or model directory")
    directory = _artifact_dir(path)
    if directory is not None:
        meta = Meta.load(directory / META_FILE)
        tok = Tokenizer.load(directory / TOKENIZER_FILE)
        if not (directory / MODEL_FILE).is_file():
            raise ValueError(f"{directory} has no {MODEL_FILE}: an unfinished export?")
        return Opened(open_artifact(directory, meta, threads), tok, _recorded_config(meta), meta.kind, "artifact")
    if path.is_dir():
        _refuse_directory(path)
    if path.suffix == ".onnx":
        raise ValueError(f"{path} is a graph alone: pass the model directory that holds it with {META_FILE} and {TOKENIZER_FILE}")
    ckpt = load_checkpoint(path)
    model, tokenizer = model_of(ckpt)
    cfg = config_of(ckpt)
    return Opened(model, tokenizer, cfg, cfg.task, "checkpoint")
