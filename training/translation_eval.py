"""Scoring a translation checkpoint on a parallel pair: teacher-forced loss and perplexity, and BLEU."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.parallel import read_pairs
from training.search import LengthRule
from training.seq2seq import Seq2Seq
from training.subword import TokenizerPair
from training.translate import bleu, teacher_forced_loss, translate


def evaluate_translation(model: Seq2Seq, tok: TokenizerPair, cfg: TrainConfig, stem: str | Path,
                         beam_size: int = 1) -> dict[str, Any]:
    """Loss, perplexity and BLEU (greedy, or beam search with the recipe's length penalty) on <stem>.<src/tgt>."""
    pairs = read_pairs(stem, cfg.data.source, cfg.data.target)
    loss, tokens = teacher_forced_loss(model, tok.encode_source(pairs.source), tok.encode_target(pairs.target))
    rule = LengthRule(cfg.decode.max_len_a, cfg.decode.max_len_b)
    hyps = translate(model, tok, pairs.source, rule, beam_size, cfg.decode.length_penalty)
    score, signature = bleu(hyps, pairs.target)
    return {"data": str(stem), "sentences": len(hyps), "loss": loss, "ppl": math.exp(loss), "target_tokens": tokens,
            "bleu": score, "beam_size": beam_size, "length_penalty": cfg.decode.length_penalty if beam_size > 1 else 0.0,
            "bleu_signature": signature}
