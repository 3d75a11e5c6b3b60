"""Sampling text from a torch CharLM one character at a time, as min-char-rnn does (with top-k/top-p)."""

from __future__ import annotations

import numpy as np
import torch

from service.artifact.sampling import sample
from service.artifact.tokenizer import Tokenizer
from training.model import CharLM


@torch.no_grad()
def generate(model: CharLM, tok: Tokenizer, prime: str, n: int, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, seed: int = 0) -> str:
    """Prime the state with `prime` in one pass, then feed back each sampled character."""
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    ids = tok.encode(prime) if prime else np.array([tok.unk_id if "\n" not in tok.tokens else tok.tokens.index("\n")])
    state = model.init_state(1)
    logits, *state = model(torch.from_numpy(ids)[None, :], *state)
    out = []
    for _ in range(n):
        nxt, _ = sample(logits[:, -1].numpy(), np.array([temperature]), np.array([top_k]), np.array([top_p]),
                        rng.random(1), banned=tok.unk_id)
        out.append(int(nxt[0]))
        logits, *state = model(torch.from_numpy(nxt)[None, :], *state)
    model.train(was_training)
    return tok.decode(out)
