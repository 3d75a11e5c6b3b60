"""Short training runs for the gradient experiments: a recipe, a number of steps, and how the gradient is clipped.

The loop is the training loop's core (training/train.py: truncated BPTT over contiguous streams, the
recipe's optimizer and warmup + cosine schedule) without checkpoints or time budgets, so that it can
record every step's gradient norm before clipping, clip in min-char-rnn's way as well as by global norm,
and start from a modified initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training.config import TrainConfig
from training.data import BPTTBatches, CharCorpus
from training.evaluate import evaluate_lm
from training.model import CharLM, CharLMConfig
from training.schedule import lr_at
from training.train import make_optimizer

CLIPS = ("none", "norm", "value")  # no clipping; global norm at the recipe's grad_clip; min-char-rnn's per-entry clip
MINCHAR_CLIP = 5.0  # min-char-rnn clips each entry of the gradient of its loss (summed over the window) to [-5, 5]


def value_limit(seq_len: int) -> float:
    """min-char-rnn's [-5, 5] in this loop's units.

    min-char-rnn's loss is summed over its window of seq_len characters; ours is the mean over B streams
    and T characters, i.e. 1/T of the per-stream window sum averaged over streams. Clipping T g to [-5, 5]
    is clipping g to [-5/T, 5/T]. Without the conversion the clip would never engage at these gradient sizes.
    """
    return MINCHAR_CLIP / seq_len


def clip_(params: list[torch.Tensor], how: str, max_norm: float, limit: float) -> tuple[float, bool]:
    """Clip the gradients in place; returns (global norm before clipping, whether the clip changed anything)."""
    if how not in CLIPS:
        raise ValueError(f"clip must be one of {CLIPS}, got {how!r}")
    if how == "norm" and max_norm <= 0:
        raise ValueError("global-norm clipping needs optim.grad_clip > 0")
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if how == "norm" else math.inf).item()
    if how == "norm":
        return norm, norm > max_norm
    if how == "value":
        changed = any(bool((p.grad.abs() > limit).any()) for p in params if p.grad is not None)
        torch.nn.utils.clip_grad_value_(params, limit)
        return norm, changed
    return norm, False


def spikes(norms: np.ndarray, factor: float = 10.0) -> int:
    """Steps whose gradient norm exceeds factor times the run's median norm."""
    return int((np.asarray(norms) > factor * np.median(norms)).sum())


@dataclass
class Run:
    """One short run: the trained model and what every step measured."""

    name: str
    model: CharLM
    losses: np.ndarray  # training loss of each step (nats/char)
    grad_norms: np.ndarray  # global gradient norm of each step, before any clipping
    head_norms: np.ndarray  # the output layer's part of it: the one gradient that does not pass back through time
    clipped: int  # steps on which the clip changed the gradient
    val_loss: float  # on the first val_chars characters of the validation split


def short_run(name: str, cfg: TrainConfig, corpus: CharCorpus, steps: int, clip: str, val_chars: int,
              prepare: Callable[[CharLM], None] | None = None) -> Run:
    """Train cfg's model for `steps` windows from its seed; `prepare` may change the initialised weights first.

    The schedule runs its warmup and full cosine decay within `steps`. Non-finite losses are recorded and
    the run goes on, so a diverging run shows as such instead of stopping the experiment.
    """
    mcfg = cfg.model_config(vocab_size=corpus.tokenizer.vocab_size)
    if not isinstance(mcfg, CharLMConfig):
        raise ValueError(f"gradient runs train a char_lm recipe, not task {cfg.task!r}")
    torch.manual_seed(cfg.seed)
    model = CharLM(mcfg)
    if prepare is not None:
        prepare(model)
    params = list(model.parameters())
    opt = make_optimizer(cfg.optim, model)
    batches = BPTTBatches(corpus.train, cfg.batch_size, cfg.seq_len, source=cfg.data.path)
    losses, norms, head_norms, clipped = np.empty(steps), np.empty(steps), np.empty(steps), 0
    model.train()
    state = list(model.init_state(cfg.batch_size))
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, step / steps, cfg.optim)
        i = step % len(batches)
        if i == 0:
            state = list(model.init_state(cfg.batch_size))  # a new pass over the text starts from the zero state
        x, y = batches.window(i)
        logits, *state = model(torch.from_numpy(x), *state)  # (B, T, V)
        state = [s.detach() for s in state]  # truncated BPTT: gradients stop at the window edge
        loss = F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(y).flatten())
        loss.backward()
        head_norms[step] = torch.cat([p.grad.flatten() for p in model.head.parameters()]).norm().item()
        norms[step], changed = clip_(params, clip, cfg.optim.grad_clip, value_limit(cfg.seq_len))
        clipped += changed
        losses[step] = loss.item()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    val = evaluate_lm(model, corpus.val[:val_chars], batch_size=16)["loss"]
    return Run(name, model, losses, norms, head_norms, clipped, val)
