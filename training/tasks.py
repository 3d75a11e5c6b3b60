"""What differs between training a char LM, a classifier and a translator: data, model, one step, evaluation.

The contract every task keeps with the loop (training/train.py), so that it trains in one process or as
one of several data-parallel ranks (training/distributed.py) with the same results:

- `model`: the bare module (evaluation, sampling, export and the checkpoint use it).
- `shard(world)`: called once, before `load_state_dict`; from then on `train_step` reads only this rank's
  share of each global batch (`world.rows`, `world.even_rows` or `world.share`). Every rank walks the same
  global data position (same seed, same permutation), so the position is global and rank-independent.
- `train_step(model)`: runs the forward through `model` (the DDP wrapper on several ranks) and returns this
  rank's share of the global batch's mean loss (the sum of its items' losses divided by the global batch's
  count, times its `world.share` weight) and the units it read. The loop back-propagates it; the shares of
  all ranks sum to the one-process loss.
- `state_dict()`: the global data position, called on every rank at the same step (it may gather across
  ranks; rank 0's is saved). `load_state_dict` takes a global position and keeps this rank's share of it,
  so a run resumes with any number of ranks.
- `evaluate()`, `sample(seed)` (char LMs): rank 0 only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from service.artifact.corpus import read_sentences
from service.artifact.tokenizer import Tokenizer, split_words
from training.caption_task import CaptionTask
from training.config import TrainConfig
from training.data import BPTTBatches, CharCorpus, file_info, pad_batch
from training.distributed import SINGLE, World
from training.evaluate import encode_all, evaluate_classifier, evaluate_lm
from training.model import CharLM, Classifier
from training.precision import autocast
from training.precision import check as check_precision
from training.sample import generate
from training.translation_task import TranslationTask


class LMTask:
    """Truncated BPTT over B contiguous streams; the carried state is detached at each window edge."""

    unit = "char"

    def __init__(self, cfg: TrainConfig, ckpt: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        tok = Tokenizer.from_dict(ckpt["tokenizer"]) if ckpt else None
        self.corpus = CharCorpus.from_file(cfg.data.path, cfg.data.val_fraction, tokenizer=tok)
        self.tok = self.corpus.tokenizer
        self.derived = {"vocab_size": self.tok.vocab_size}
        self.model = CharLM(cfg.model_config(**self.derived))
        check_precision(self.model, cfg.precision, (torch.zeros(2, 2, dtype=torch.long), *self.model.init_state(2)))
        self.batches = BPTTBatches(self.corpus.train, cfg.batch_size, cfg.seq_len, source=cfg.data.path)
        self.data_info = {"train": {**file_info(cfg.data.path), "split": f"first {1 - cfg.data.val_fraction:.0%}"},
                          "val": {**file_info(cfg.data.path), "split": f"last {cfg.data.val_fraction:.0%}"}}
        self.rng = np.random.default_rng(cfg.seed)
        self.epoch, self.offset, self.next_window = 0, 0, 0
        self.world, self.streams = SINGLE, slice(None)
        self.carry: list[torch.Tensor] | None = None  # this rank's streams' state, each (L, B / ranks, H)

    def shard(self, world: World) -> None:
        """Rank r owns streams r*B/W .. (r+1)*B/W - 1 of the B global ones, for the whole run: the state it
        carries from one window to the next is its own streams', so truncated BPTT stays exact."""
        self.world, self.streams = world, world.even_rows(self.cfg.batch_size, "batch_size")

    def _next(self) -> tuple[np.ndarray, np.ndarray]:
        if self.next_window >= (self.batches.n - self.offset) // self.cfg.seq_len:
            # New pass: shift where windows cut the text and start from a zero state.
            self.epoch += 1
            self.offset = int(self.rng.integers(self.cfg.seq_len))
            self.next_window, self.carry = 0, None
        x, y = self.batches.window(self.next_window, self.offset, self.streams)
        self.next_window += 1
        return x, y

    def train_step(self, model: torch.nn.Module) -> tuple[torch.Tensor, int]:
        x, y = self._next()  # (b, T): this rank's b of the B streams
        if self.carry is None:
            self.carry = list(self.model.init_state(len(x)))
        with autocast(self.cfg.precision):
            logits, *state = model(torch.from_numpy(x), *self.carry)  # (b, T, V)
        self.carry = [s.detach().float() for s in state]
        loss = F.cross_entropy(logits.float().flatten(0, 1), torch.from_numpy(y).flatten(), reduction="sum")
        return loss / (self.cfg.batch_size * self.cfg.seq_len), x.size

    def evaluate(self) -> dict[str, Any]:
        m = evaluate_lm(self.model, self.corpus.val, self.cfg.eval_batch_size)
        return {"val_loss": m["loss"], "val_bpc": m["bpc"], "val_chars": m["chars"]}

    def sample(self, seed: int) -> str:
        return generate(self.model, self.tok, "\n", self.cfg.sample_len, temperature=0.8, seed=seed)

    def state_dict(self) -> dict[str, Any]:
        """The carried state of all B streams, gathered from the ranks (dim 1 is the stream)."""
        carry = None if self.carry is None else [self.world.gather_rows(s, dim=1) for s in self.carry]
        return {"epoch": self.epoch, "offset": self.offset, "next_window": self.next_window,
                "carry": carry, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.epoch, self.offset, self.next_window = s["epoch"], s["offset"], s["next_window"]
        self.carry = None if s["carry"] is None else [c[:, self.streams].contiguous() for c in s["carry"]]
        self.rng.bit_generator.state = s["rng"]


class ClassifierTask:
    """Shuffled mini-batches of labelled sentences, padded at the end; the model ignores the padding."""

    unit = "example"

    def __init__(self, cfg: TrainConfig, ckpt: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        d = cfg.data
        if not d.val_path:
            raise ValueError("a classifier needs data.val_path (labelled validation sentences)")
        self.train_data = read_sentences(d.path, d.labels, d.format)
        self.val_data = read_sentences(d.val_path, d.labels, d.format)
        if ckpt:
            self.tok = Tokenizer.from_dict(ckpt["tokenizer"])
        else:
            split = list if d.level == "char" else split_words
            pieces = (p for t in self.train_data.texts for p in split(t))
            self.tok = Tokenizer.build(pieces, level=d.level, min_freq=d.min_freq, with_pad=True)
        self.seqs = encode_all(self.tok, self.train_data.texts)
        self.derived = {"vocab_size": self.tok.vocab_size, "n_class": len(d.labels), "pad_id": self.tok.pad_id}
        self.model = Classifier(cfg.model_config(**self.derived))
        check_precision(self.model, cfg.precision, (torch.ones(2, 2, dtype=torch.long), torch.tensor([2, 1])))
        self.data_info = {"train": file_info(d.path), "val": file_info(d.val_path)}
        self.rng = np.random.default_rng(cfg.seed)
        self.epoch, self.next_batch = 0, 0
        self.perm = self.rng.permutation(len(self.seqs))
        self.world = SINGLE

    def shard(self, world: World) -> None:
        """Rank r takes its contiguous slice of each global batch of the same permutation."""
        world.even_rows(self.cfg.batch_size, "batch_size")
        self.world = world

    def train_step(self, model: torch.nn.Module) -> tuple[torch.Tensor, int]:
        B = self.cfg.batch_size
        if self.next_batch * B >= len(self.perm):
            self.epoch += 1
            self.perm, self.next_batch = self.rng.permutation(len(self.seqs)), 0
        batch = self.perm[self.next_batch * B : (self.next_batch + 1) * B]  # the global batch (short at an epoch's end)
        self.next_batch += 1
        idx, weight = self.world.share(batch)
        tokens, lengths = pad_batch([self.seqs[i] for i in idx], self.tok.pad_id)
        with autocast(self.cfg.precision):
            logits = model(torch.from_numpy(tokens), torch.from_numpy(lengths))  # (b, C)
        loss = F.cross_entropy(logits.float(), torch.from_numpy(self.train_data.labels[idx]), reduction="sum")
        return loss * (weight / len(batch)), len(idx) if weight else 0

    def evaluate(self) -> dict[str, Any]:
        m = evaluate_classifier(self.model, self.tok, self.val_data, self.cfg.eval_batch_size)
        return {"val_loss": m["loss"], "val_accuracy": m["accuracy"], "val_examples": m["examples"],
                "val_confusion": m["confusion"]}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "next_batch": self.next_batch, "perm": torch.from_numpy(self.perm),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.epoch, self.next_batch, self.perm = s["epoch"], s["next_batch"], s["perm"].numpy()
        self.rng.bit_generator.state = s["rng"]


def make_task(cfg: TrainConfig, ckpt: dict[str, Any] | None = None) -> LMTask | ClassifierTask | TranslationTask | CaptionTask:
    return {"char_lm": LMTask, "classifier": ClassifierTask, "translation": TranslationTask,
            "captioning": CaptionTask}[cfg.task](cfg, ckpt)
