"""Evaluation: loss in nats/char and bits/char for char LMs; loss, accuracy and confusion for classifiers."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from service.artifact.corpus import Sentences
from service.artifact.tokenizer import Tokenizer
from training.data import pad_batch
from training.model import CharLM, Classifier


@torch.no_grad()
def evaluate_lm(model: CharLM, data: np.ndarray, batch_size: int = 64, seq_len: int = 256) -> dict[str, float]:
    """Mean cross-entropy over every predicted character, the state carried across windows.

    The data is cut into B contiguous streams (the last window of each may be short), so only
    the (len - 1) mod B trailing characters go unscored. bits/char = nats/char / ln 2.
    """
    was_training = model.training
    model.eval()
    B = max(1, min(batch_size, (len(data) - 1) // 2))
    n = (len(data) - 1) // B  # predicted characters per stream
    streams = data[np.arange(B)[:, None] * n + np.arange(n + 1)[None, :]]  # (B, n + 1)
    state = model.init_state(B)
    total = 0.0
    for i in range(0, n, seq_len):
        x = torch.from_numpy(streams[:, i : min(i + seq_len, n)])
        y = torch.from_numpy(streams[:, i + 1 : i + seq_len + 1])
        logits, *state = model(x, *state)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
    model.train(was_training)
    loss = total / (B * n)
    return {"loss": loss, "bpc": loss / math.log(2), "chars": B * n}


def encode_all(tok: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    return [tok.encode(t) for t in texts]


@torch.no_grad()
def evaluate_classifier(model: Classifier, tok: Tokenizer, data: Sentences, batch_size: int = 256) -> dict:
    """Loss, accuracy and confusion matrix (rows = true label, columns = predicted)."""
    was_training = model.training
    model.eval()
    seqs = encode_all(tok, data.texts)
    n_class = model.cfg.n_class
    confusion = np.zeros((n_class, n_class), dtype=np.int64)
    total = 0.0
    for i in range(0, len(seqs), batch_size):
        tokens, lengths = pad_batch(seqs[i : i + batch_size], tok.pad_id)
        logits = model(torch.from_numpy(tokens), torch.from_numpy(lengths))
        y = torch.from_numpy(data.labels[i : i + batch_size])
        total += F.cross_entropy(logits, y, reduction="sum").item()
        np.add.at(confusion, (y.numpy(), logits.argmax(1).numpy()), 1)
    model.train(was_training)
    return {"loss": total / len(seqs), "accuracy": float(np.trace(confusion) / confusion.sum()),
            "examples": len(seqs), "confusion": confusion.tolist()}
