"""A model artifact (model.onnx + meta.json) run by ONNX Runtime behind the torch modules' call signature.

eval and sample then score an artifact with the very code that scores a checkpoint (training/evaluate.py,
training/sample.py): same windows, same carried state, same sampler. Tensors cross as torch tensors on the
way in and out, numpy in between; nothing is trained, so the adapters are always in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort
import torch
from torch import Tensor

from service.artifact import LENGTHS, LOGITS, MODEL_FILE, TOKENS, Meta


@dataclass(frozen=True)
class ArtifactSizes:
    """What evaluate/sample read from a model's cfg."""

    cell: str
    n_layer: int
    hidden_size: int
    vocab_size: int
    n_class: int


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path / MODEL_FILE), opts, providers=["CPUExecutionProvider"])


class _Adapter:
    training = False

    def __init__(self, path: Path, meta: Meta, threads: int) -> None:
        self.meta, self.sess = meta, _session(path, threads)
        s = meta.sizes
        self.cfg = ArtifactSizes(meta.cell, s["n_layer"], s["hidden_size"], s["vocab_size"], len(meta.labels))

    def eval(self) -> _Adapter:
        return self

    def train(self, mode: bool = True) -> _Adapter:
        if mode:
            raise ValueError("an ONNX artifact cannot be trained; train from its recipe or checkpoint")
        return self


class OnnxCharLM(_Adapter):
    """CharLM's interface: (tokens (B, T), *state (L, B, H)) -> (logits (B, T, V), *new state)."""

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        return tuple(torch.zeros(s.n_layer, batch, s.hidden_size) for s in self.meta.state)

    def __call__(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        feed = {TOKENS: tokens.numpy(), **{s.input: x.numpy() for s, x in zip(self.meta.state, state, strict=True)}}
        out = self.sess.run([LOGITS, *(s.output for s in self.meta.state)], feed)
        return tuple(torch.from_numpy(o) for o in out)


class OnnxClassifier(_Adapter):
    """Classifier's interface: (tokens (B, T), lengths (B,)) -> logits (B, C)."""

    def __call__(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return torch.from_numpy(self.sess.run([LOGITS], {TOKENS: tokens.numpy(), LENGTHS: lengths.numpy()})[0])


def open_artifact(path: Path, meta: Meta, threads: int = 1) -> OnnxCharLM | OnnxClassifier:
    return (OnnxCharLM if meta.kind == "char_lm" else OnnxClassifier)(path, meta, threads)
