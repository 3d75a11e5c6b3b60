"""Typed training config: JSON recipe + `--key=value` overrides, resolved once and saved in checkpoints."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from training.captioner import CaptionerConfig
from training.model import CharLMConfig, ClassifierConfig
from training.precision import PRECISIONS
from training.precision import resolve as resolve_precision
from training.seq2seq import Seq2SeqConfig

MODEL_CONFIGS = {"char_lm": CharLMConfig, "classifier": ClassifierConfig, "translation": Seq2SeqConfig,
                 "captioning": CaptionerConfig}
TASKS = tuple(MODEL_CONFIGS)


@dataclass
class DataConfig:
    path: str = ""  # corpus (char_lm), labelled sentences (classifier), the training pair's stem (translation:
    #   "../shared/data/multi30k/train" reads train.<source> and train.<target>), or the Flickr8k folder (captioning)
    val_path: str = ""  # classifier/translation validation file (stem); char_lm validates on the last val_fraction
    test_path: str = ""  # translation: held-out test stem, scored only at export (BLEU in meta.json)
    val_fraction: float = 0.1  # char_lm: the last 10% of characters
    format: str = "auto"  # classifier files: "tsv" (GLUE, header), "label_line" ("<label> <text>"), "auto" (from the first line)
    level: str = "char"  # tokenizer: "char" or "word"; translation: "bpe" (subwords) or "word"
    min_freq: int = 1  # words (or BPE merges) seen fewer times in training map to <unk> (are not learned)
    source: str = "de"  # translation: language suffix of the source files
    target: str = "en"  # translation: language suffix of the target files
    vocab_size: int = 8000  # translation, level "bpe": subword vocabulary of each language, specials included
    labels: dict[str, str] = field(default_factory=lambda: {"0": "negative", "1": "positive"})  # raw -> name, in class order
    image_height: int = 128  # captioning: every image is resized to height x width for the encoder (image.py)
    image_width: int = 128
    limit_images: int = 0  # captioning: > 0 keeps the first N images (by name) of each split (small runs, tests)
    cache_dir: str = "runs/cache"  # captioning: encoder features of every image, computed once (feature_cache.py)


@dataclass
class OptimConfig:
    name: str = "adamw"  # "adamw" or "adagrad" (min-char-rnn's optimizer)
    lr: float = 2e-3
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    warmup_steps: int = 100  # linear warmup from 0
    decay: str = "cosine"  # "cosine" to min_lr_ratio * lr at max_steps, or "none"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; 0 disables (min-char-rnn clips each value to [-5, 5])


@dataclass
class DecodeConfig:
    """Translation decoding, used for validation BLEU and recorded in meta.json so serving decodes alike."""

    max_len_a: float = 1.5  # at most a * source_tokens + b target tokens (EOS included), then stop;
    #   captioning: a must be 0 and b is the caption limit (training captions are cut to b tokens too)
    max_len_b: int = 10
    beam_size: int = 5  # the beam of the beam-search BLEU reported at export (validation decodes greedily)
    length_penalty: float = 0.6  # GNMT's alpha (Wu et al. 2016): score = log P / ((5 + |Y|) / 6) ** alpha


@dataclass
class TrainConfig:
    task: str = "char_lm"  # "char_lm", "classifier", "translation" or "captioning"
    name: str = "model"  # artifact name under models/
    out_dir: str = "runs/model"  # checkpoints land here
    seed: int = 1337
    threads: int = 2  # torch intra-op threads, set explicitly
    precision: str = "fp32"  # "bf16": forward under CPU autocast, fp32 weights (training/precision.py); needs AVX-512 BF16
    #   or AMX; "auto": bf16 where this CPU has them, else fp32
    batch_size: int = 64  # char_lm: parallel BPTT streams; classifier: sentences per step; captioning: captions
    batch_tokens: int = 4000  # translation: source + target tokens per step, padding included (length-bucketed)
    label_smoothing: float = 0.0  # translation, captioning: cross-entropy label smoothing (Szegedy et al. 2016)
    seq_len: int = 64  # char_lm: BPTT window T
    max_steps: int = 2000
    time_budget_min: float = 0.0  # > 0: stop after this many minutes, LR decay following the clock
    #   (how "best loss within N minutes" is measured); runs are then not bit-reproducible. 0 = steps only.
    time_budget_clock: str = "wall"  # "wall", or "cpu": a minute = `budget_cores` CPU-minutes of this process,
    #   the same work whether or not other processes share the cores
    budget_cores: int = 0  # cores a budget minute is counted for on the "cpu" clock; 0 = `threads`. A recipe whose
    #   kernels keep one core busy (bfloat16 LSTMs) runs 1 thread and still counts "N minutes of 2 cores" as 2N CPU-minutes
    eval_interval: int = 250
    eval_batch_size: int = 64
    log_interval: int = 10
    sample_interval: int = 500  # char_lm: print a sample like min-char-rnn does; 0 disables
    sample_len: int = 200
    checkpoint_interval: int = 500
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    model: dict[str, Any] = field(default_factory=dict)  # CharLMConfig, ClassifierConfig or Seq2SeqConfig fields

    def model_config(self, **derived: Any) -> CharLMConfig | ClassifierConfig | Seq2SeqConfig:
        """The model's dataclass, with sizes that come from the data (vocab, classes) filled in."""
        if self.task not in MODEL_CONFIGS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        return _build(MODEL_CONFIGS[self.task], {**self.model, **derived}, "model")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Construct a dataclass from a dict, refusing unknown keys (typos must not pass silently)."""
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown config key(s) in {where}: {', '.join(sorted(unknown))}")
    kwargs = {}
    for key, value in values.items():
        default = getattr(cls(), key)
        if is_dataclass(default) and isinstance(value, dict):
            kwargs[key] = _build(type(default), value, f"{where}.{key}")
        else:
            kwargs[key] = value
    return cls(**kwargs)


def _coerce(text: str, current: Any, key: str) -> Any:
    """Parse an override value to the type of the field it replaces."""
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"--{key} expects true/false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(current, (int, float)):
        try:
            return type(current)(text)
        except ValueError:
            raise ValueError(f"--{key} expects a number, got {text!r}") from None
    if isinstance(current, (dict, list)):
        return json.loads(text)
    return text


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Recipe file (JSON) then overrides like `--optim.lr=1e-3` or `--model.hidden_size=512`."""
    raw: dict[str, Any] = json.loads(Path(path).read_text()) if path else {}
    raw.pop("//", None)  # a recipe may carry a comment under "//"
    cfg = _build(TrainConfig, raw, "config")
    tree = asdict(cfg)
    for item in overrides:
        if not item.startswith("--") or "=" not in item:
            raise ValueError(f"override {item!r} must look like --key=value")
        key, text = item[2:].split("=", 1)
        *parents, leaf = key.split(".")
        node = tree
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ValueError(f"unknown config key: {key}")
            node = node[p]
        if parents == ["model"]:
            model_defaults = asdict(TrainConfig(task=tree["task"]).model_config())  # the task as overridden so far
            if leaf not in model_defaults:
                raise ValueError(f"unknown config key: {key}")
            node[leaf] = _coerce(text, model_defaults[leaf], key)
        elif leaf not in node:
            raise ValueError(f"unknown config key: {key}")
        else:
            node[leaf] = _coerce(text, node[leaf], key)
    cfg = _build(TrainConfig, tree, "config")
    validate(cfg)
    return replace(cfg, precision=resolve_precision(cfg.precision))  # checkpoints record what ran


def validate(cfg: TrainConfig) -> None:
    if cfg.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {cfg.task!r}")
    if cfg.optim.name not in ("adamw", "adagrad"):
        raise ValueError(f"optim.name must be 'adamw' or 'adagrad', got {cfg.optim.name!r}")
    if cfg.optim.decay not in ("cosine", "none"):
        raise ValueError(f"optim.decay must be 'cosine' or 'none', got {cfg.optim.decay!r}")
    levels = {"translation": ("bpe", "word"), "captioning": ("word",)}.get(cfg.task, ("char", "word"))
    if cfg.data.level not in levels:
        raise ValueError(f"data.level must be one of {levels} for a {cfg.task}, got {cfg.data.level!r}")
    if cfg.task == "char_lm" and cfg.data.level != "char":
        raise ValueError("a char_lm needs data.level = 'char'")
    if cfg.task == "translation":
        _validate_translation(cfg)
    if cfg.task == "captioning":
        _validate_captioning(cfg)
    for key in ("batch_size", "seq_len", "max_steps", "threads", "eval_interval", "eval_batch_size"):
        if getattr(cfg, key) <= 0:
            raise ValueError(f"{key} must be positive")
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    if cfg.budget_cores < 0:
        raise ValueError(f"budget_cores must be 0 (= threads) or positive, got {cfg.budget_cores}")
    if cfg.time_budget_clock not in ("wall", "cpu"):
        raise ValueError(f"time_budget_clock must be 'wall' or 'cpu', got {cfg.time_budget_clock!r}")
    if cfg.time_budget_min < 0:
        raise ValueError("time_budget_min must be >= 0")
    if not 0 < cfg.data.val_fraction < 1:
        raise ValueError("data.val_fraction must be in (0, 1)")
    if not cfg.data.path:
        raise ValueError("data.path is required")
    cfg.model_config()  # unknown model keys fail here, before any data is read


def _validate_translation(cfg: TrainConfig) -> None:
    d, dec = cfg.data, cfg.decode
    if not d.source or not d.target or d.source == d.target:
        raise ValueError(f"data.source and data.target must be two different languages, got {d.source!r}, {d.target!r}")
    if not d.val_path:
        raise ValueError("a translation needs data.val_path (the validation pair's stem)")
    if d.level == "bpe" and d.vocab_size < 8:
        raise ValueError("data.vocab_size must be at least 8 (4 special tokens and some subwords)")
    if cfg.batch_tokens <= 0:
        raise ValueError("batch_tokens must be positive")
    if not 0 <= cfg.label_smoothing < 1:
        raise ValueError("label_smoothing must be in [0, 1)")
    if dec.max_len_a < 0 or dec.max_len_b < 1 or dec.beam_size < 1 or dec.length_penalty < 0:
        raise ValueError("decode needs max_len_a >= 0, max_len_b >= 1, beam_size >= 1 and length_penalty >= 0")


def _validate_captioning(cfg: TrainConfig) -> None:
    d, dec = cfg.data, cfg.decode
    if not (0 < d.image_height <= 4096 and 0 < d.image_width <= 4096):
        raise ValueError("data.image_height and data.image_width must be from 1 to 4096")
    if d.limit_images < 0:
        raise ValueError("data.limit_images must be >= 0 (0 = every image)")
    if dec.max_len_a != 0 or dec.max_len_b < 2:
        raise ValueError("captioning needs decode.max_len_a = 0 and decode.max_len_b >= 2 (the caption limit, EOS included)")
    if dec.beam_size < 1 or dec.length_penalty < 0:
        raise ValueError("decode needs beam_size >= 1 and length_penalty >= 0")
    if not 0 <= cfg.label_smoothing < 1:
        raise ValueError("label_smoothing must be in [0, 1)")
