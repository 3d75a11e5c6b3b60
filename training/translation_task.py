"""The translation task: parallel data, length-bucketed token batches, one teacher-forced step, and
validation by loss, perplexity and greedy BLEU."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training.config import TrainConfig
from training.data import pad_batch
from training.distributed import SINGLE, World
from training.parallel import pair_info, read_pairs, token_batches
from training.search import LengthRule
from training.seq2seq import Seq2Seq, Seq2SeqConfig
from training.subword import TokenizerPair, learn
from training.translate import SPECIAL_IDS, bleu, shift_right, teacher_forced_loss, translate


class TranslationTask:
    """Batches of about `batch_tokens` tokens (padding counted) of similar-length pairs, reshuffled each epoch."""

    unit = "token"  # target tokens, EOS included

    def __init__(self, cfg: TrainConfig, ckpt: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        d = cfg.data
        train = read_pairs(d.path, d.source, d.target)
        self.val = read_pairs(d.val_path, d.source, d.target)
        if ckpt:
            self.tok = TokenizerPair.from_dict(ckpt["tokenizer"])
        else:  # learned on the training split only
            self.tok = TokenizerPair(learn(train.source, d.level, d.vocab_size, d.min_freq),
                                     learn(train.target, d.level, d.vocab_size, d.min_freq))
        self.src, self.tgt = self.tok.encode_source(train.source), self.tok.encode_target(train.target)
        self.val_src, self.val_tgt = self.tok.encode_source(self.val.source), self.tok.encode_target(self.val.target)
        self.src_lens = np.array([max(len(s), 1) for s in self.src])
        self.tgt_lens = np.array([len(t) for t in self.tgt])
        self.derived = {"src_vocab": self.tok.source.get_vocab_size(), "tgt_vocab": self.tok.target.get_vocab_size(),
                        "pad_id": SPECIAL_IDS.pad}
        model_cfg = cfg.model_config(**self.derived)
        assert isinstance(model_cfg, Seq2SeqConfig)  # the task is "translation"
        self.model = Seq2Seq(model_cfg)
        self.rule = LengthRule(cfg.decode.max_len_a, cfg.decode.max_len_b)
        self.data_info = {"train": pair_info(d.path, d.source, d.target), "val": pair_info(d.val_path, d.source, d.target)}
        if d.test_path:
            self.data_info["test"] = pair_info(d.test_path, d.source, d.target)
        self.rng = np.random.default_rng(cfg.seed)
        self.epoch, self.next_batch = 0, 0
        self.batches = token_batches(self.src_lens, self.tgt_lens, cfg.batch_tokens, self.rng)
        self.world = SINGLE

    def shard(self, world: World) -> None:
        """Rank r takes its contiguous slice of the rows of each global (length-bucketed) batch."""
        self.world = world

    def train_step(self, model: torch.nn.Module) -> tuple[torch.Tensor, int]:
        if self.next_batch >= len(self.batches):
            self.epoch += 1
            self.batches, self.next_batch = token_batches(self.src_lens, self.tgt_lens, self.cfg.batch_tokens, self.rng), 0
        batch = self.batches[self.next_batch]  # the global batch
        self.next_batch += 1
        idx, weight = self.world.share(batch)
        src, lengths = pad_batch([self.src[i] for i in idx], SPECIAL_IDS.pad)  # (b, S)
        y, _ = pad_batch([self.tgt[i] for i in idx], SPECIAL_IDS.pad)  # (b, T), EOS-terminated
        logits = model(torch.from_numpy(src), torch.from_numpy(lengths), torch.from_numpy(shift_right(y)))
        target = torch.from_numpy(y).flatten()
        loss = F.cross_entropy(logits.flatten(0, 1), target, ignore_index=SPECIAL_IDS.pad,
                               label_smoothing=self.cfg.label_smoothing, reduction="sum")
        # The mean over the global batch's target tokens, which every rank knows without communicating:
        # ranks' shares hold different numbers of tokens, so a per-rank mean would weigh them wrongly.
        global_tokens = int(self.tgt_lens[batch].sum())
        return loss * (weight / global_tokens), int((target != SPECIAL_IDS.pad).sum()) if weight else 0

    def evaluate(self) -> dict[str, Any]:
        """Teacher-forced loss and perplexity, and BLEU of greedy translations of the whole validation set."""
        loss, tokens = teacher_forced_loss(self.model, self.val_src, self.val_tgt, self.cfg.eval_batch_size)
        hyps = translate(self.model, self.tok, self.val.source, self.rule)
        score, signature = bleu(hyps, self.val.target)
        return {"val_loss": loss, "val_ppl": math.exp(loss), "val_bleu": score, "val_tokens": tokens,
                "epoch": self.epoch, "bleu_signature": signature}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "next_batch": self.next_batch, "rng": self.rng.bit_generator.state,
                "order": torch.from_numpy(np.concatenate(self.batches)),
                "sizes": torch.tensor([len(b) for b in self.batches])}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.epoch, self.next_batch = s["epoch"], s["next_batch"]
        self.rng.bit_generator.state = s["rng"]
        self.batches = np.split(s["order"].numpy(), np.cumsum(s["sizes"].numpy())[:-1])
