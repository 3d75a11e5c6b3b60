"""Captioning with the torch model (the reference decoder), and BLEU-1..4 (Papineni et al. 2002) and CIDEr
(Vedantam et al. 2015) as the COCO caption evaluation code computes them (pycocoevalcap 1.2).

Decoding reuses training/search.py: the LSTM's (h, c) travel as one array (2, B, H) so the search, which
indexes the state's batch on axis 1, needs no second copy for captions.

Tokenisation for scoring: both hypotheses and references are split as the captioner's tokenizer splits
(lowercase, words and punctuation apart), and punctuation tokens are dropped, as the COCO code's PTB
tokenizer drops them. Its Java tokenizer itself is not used (no Java here); the two differ only in corner
cases such as "'s" (kept whole here).
"""

from __future__ import annotations

import contextlib
import io
import unicodedata
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from training.caption_data import SPECIAL_IDS, CaptionTokenizer
from training.captioner import Captioner
from training.image_encoder import EfficientNetLite0
from training.search import DecoderStepper, beam_from, greedy_from


def pack_state(h: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(1, B, H) h and c -> (2, B, H): one state array with the batch on axis 1, as search.py indexes it."""
    return np.concatenate([h, c], axis=0)


class TorchCaptionStepper:
    """The torch model as a search.Stepper over packed (h, c); encodes cached features or images."""

    def __init__(self, model: Captioner, cnn: EfficientNetLite0 | None = None) -> None:
        self.model, self.cnn = model, cnn

    @torch.no_grad()
    def encode_features(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """features (B, D, rows, cols) -> memory (B, R, D), keys (B, R, A), packed state (2, B, H)."""
        memory, keys, h, c = self.model.encode(torch.from_numpy(np.asarray(features, dtype=np.float32)))
        return memory.numpy(), keys.numpy(), pack_state(h.numpy(), c.numpy())

    @torch.no_grad()
    def encode_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """images (B, 3, H, W) in [-1, 1] -> as encode_features, through the CNN."""
        assert self.cnn is not None, "encode_images needs the CNN"
        return self.encode_features(self.cnn.features(torch.from_numpy(images)).numpy())

    @torch.no_grad()
    def step(self, prev: np.ndarray, state: np.ndarray, memory: np.ndarray, keys: np.ndarray,
             mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = torch.from_numpy(state)
        logits, h, c, alpha = self.model.step(torch.from_numpy(prev), s[:1], s[1:], torch.from_numpy(memory),
                                              torch.from_numpy(keys), torch.from_numpy(mask))
        return logits.numpy(), torch.cat([h, c]).numpy(), alpha.numpy()


def decode(stepper: DecoderStepper, memory: np.ndarray, keys: np.ndarray, state: np.ndarray, max_tokens: int, beam_size: int = 1,
           alpha: float = 0.0) -> list[list[int]]:
    """Word ids (EOS excluded) of each image: greedy when beam_size is 1, else beam search with GNMT's penalty."""
    B, R = memory.shape[:2]
    mask, limit = np.ones((B, R), dtype=bool), np.full(B, max_tokens, dtype=np.int64)
    if beam_size == 1:
        return greedy_from(stepper, memory, keys, state, mask, limit, SPECIAL_IDS)
    return beam_from(stepper, memory, keys, state, mask, limit, SPECIAL_IDS, beam_size, alpha)


def caption_features(model: Captioner, features: np.ndarray, max_tokens: int, beam_size: int = 1, alpha: float = 0.0,
                     batch_size: int = 100) -> list[list[int]]:
    """Word ids for every image of cached features (N, D, rows, cols), in eval mode, in batches."""
    was_training = model.training
    model.eval()
    stepper, out = TorchCaptionStepper(model), []
    try:
        for i in range(0, len(features), batch_size):
            memory, keys, state = stepper.encode_features(features[i : i + batch_size])
            out += decode(stepper, memory, keys, state, max_tokens, beam_size, alpha)
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def teacher_forced_loss(model: Captioner, features: np.ndarray, image_of: np.ndarray, targets: Sequence[np.ndarray],
                        batch_size: int = 256) -> tuple[float, int]:
    """Mean cross-entropy (nats) per word, EOS included, over captions targets[k] of images image_of[k]."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(targets), batch_size):
        y, prev = pad_targets(targets[i : i + batch_size])
        f = torch.from_numpy(np.asarray(features[image_of[i : i + batch_size]], dtype=np.float32))
        logits, _ = model(f, torch.from_numpy(prev))
        total += F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(y).flatten(), ignore_index=SPECIAL_IDS.pad,
                                 reduction="sum").item()
        count += int((y != SPECIAL_IDS.pad).sum())
    model.train(was_training)
    return total / count, count


def pad_targets(targets: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """EOS-terminated targets -> y (B, T) padded, and the teacher-forcing inputs: BOS then y shifted right."""
    T = max(len(t) for t in targets)
    y = np.full((len(targets), T), SPECIAL_IDS.pad, dtype=np.int64)
    for i, t in enumerate(targets):
        y[i, : len(t)] = t
    prev = np.concatenate([np.full((len(y), 1), SPECIAL_IDS.bos, dtype=np.int64), y[:, :-1]], axis=1)
    return y, prev


def _is_punctuation(word: str) -> bool:
    return all(unicodedata.category(ch).startswith("P") for ch in word)


def score(tok: CaptionTokenizer, hypotheses: Sequence[Sequence[int]], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 and CIDEr (pycocoevalcap; x100, as papers report them) of word-id hypotheses against
    each image's raw reference captions."""
    res = {i: [" ".join(w for w in tok.words(h) if not _is_punctuation(w))] for i, h in enumerate(hypotheses)}
    gts = {i: [" ".join(w for w in tok.split(r) if not _is_punctuation(w)) for r in refs]
           for i, refs in enumerate(references)}
    with contextlib.redirect_stdout(io.StringIO()):  # the scorers print their internals
        bleu, _ = Bleu(4).compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
    return {**{f"bleu{n + 1}": 100 * float(b) for n, b in enumerate(bleu)}, "cider": 100 * float(cider)}
