"""Translation with the torch model (the reference decoder) and corpus BLEU with sacrebleu."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sacrebleu.metrics import BLEU

from training.data import pad_batch
from training.search import LengthRule, Specials, translate_all
from training.seq2seq import Seq2Seq
from training.subword import BOS, EOS, PAD, SPECIALS, TokenizerPair

SPECIAL_IDS = Specials(pad=SPECIALS.index(PAD), bos=SPECIALS.index(BOS), eos=SPECIALS.index(EOS))


class TorchStepper:
    """The torch model as search.Stepper: numpy in, numpy out, eval mode, no gradients."""

    def __init__(self, model: Seq2Seq) -> None:
        self.model = model

    @torch.no_grad()
    def encode(self, src: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        memory, keys, h0 = self.model.encode(torch.from_numpy(src), torch.from_numpy(lengths))
        return memory.numpy(), keys.numpy(), h0.numpy()

    @torch.no_grad()
    def step(self, prev: np.ndarray, h: np.ndarray, memory: np.ndarray, keys: np.ndarray,
             mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits, new_h, attn = self.model.decode(torch.from_numpy(prev).unsqueeze(1), torch.from_numpy(h),
                                                torch.from_numpy(memory), torch.from_numpy(keys), torch.from_numpy(mask))
        return logits.squeeze(1).numpy(), new_h.numpy(), attn.squeeze(1).numpy()


def translate(model: Seq2Seq, tok: TokenizerPair, sources: Sequence[str], rule: LengthRule, beam_size: int = 1,
              alpha: float = 0.0) -> list[str]:
    """Detokenized translations of `sources` (greedy when beam_size is 1)."""
    was_training = model.training
    model.eval()
    try:
        ids = translate_all(TorchStepper(model), tok.encode_source(sources), SPECIAL_IDS, rule, beam_size, alpha)
    finally:
        model.train(was_training)
    return tok.decode_target(ids)


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """Corpus BLEU of detokenized, cased text (sacrebleu defaults: 13a tokenization) and its signature."""
    metric = BLEU()
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return score.score, str(metric.get_signature())


@torch.no_grad()
def teacher_forced_loss(model: Seq2Seq, src: Sequence[np.ndarray], tgt: Sequence[np.ndarray],
                        batch_size: int = 128) -> tuple[float, int]:
    """Mean cross-entropy (nats) per target token, EOS included, and the number of target tokens."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(src), batch_size):
        s, lengths = pad_batch(list(src[i : i + batch_size]), SPECIAL_IDS.pad)
        y, _ = pad_batch(list(tgt[i : i + batch_size]), SPECIAL_IDS.pad)
        logits = model(torch.from_numpy(s), torch.from_numpy(lengths), torch.from_numpy(shift_right(y)))
        total += F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(y).flatten(), ignore_index=SPECIAL_IDS.pad,
                                 reduction="sum").item()
        count += int((y != SPECIAL_IDS.pad).sum())
    model.train(was_training)
    return total / count, count


def shift_right(y: np.ndarray) -> np.ndarray:
    """Decoder inputs under teacher forcing: BOS, then the gold tokens but the last. (B, T) -> (B, T)."""
    return np.concatenate([np.full((y.shape[0], 1), SPECIAL_IDS.bos, dtype=y.dtype), y[:, :-1]], axis=1)
