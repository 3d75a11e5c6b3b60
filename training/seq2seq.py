"""Encoder-decoder with attention (Seq2Seq) and its config dataclass.

Bidirectional GRU encoder (Cho et al. 2014; Bahdanau et al. 2015) and a GRU decoder with Luong et al.
(2015) global attention, "general" score, without input feeding:

    h_t   = GRU(h_{t-1}, emb(y_{t-1}))                 decoder state
    a_t   = softmax_s(h_t . W_a m_s)  over real s       alignment (masked at padding)
    c_t   = sum_s a_t[s] m_s                            context
    o_t   = tanh(W_c [c_t; h_t])                        attentional hidden state
    p_t   = softmax(E_y o_t + b)                        output, tied to the target embedding E_y

Why Luong and not Bahdanau's additive attention: the decoder's recurrence does not read the context, so
under teacher forcing the whole target runs through one nn.GRU call and the attention of all steps is two
batched matmuls, several times faster on a CPU than Bahdanau's step-by-step loop, where c_t feeds the
GRU input. The "general" score also lets the encoder precompute keys W_a m_s once per sentence, so a
decoding step costs one matrix-vector product per source position. Luong et al. report input feeding
adds about 1 BLEU; it would bring the step loop back, so it is left out.
Output embedding tying (Press & Wolf 2017) saves the largest matrix and regularises the softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.model import reverse_within_length


@dataclass
class Seq2SeqConfig:
    src_vocab: int = 0  # set from the source tokenizer at build time
    tgt_vocab: int = 0  # set from the target tokenizer at build time
    pad_id: int = 0  # the special ids are the same in both vocabularies (set at build time)
    n_embd: int = 256  # embeddings of both languages, and the attentional hidden o_t (tied output)
    enc_hidden: int = 256  # per direction: the memory m_s is 2 * enc_hidden wide
    dec_hidden: int = 512
    n_layer: int = 1  # decoder GRU layers (the encoder has one bidirectional layer)
    dropout: float = 0.3  # embeddings, memory and o_t


class Seq2Seq(nn.Module):
    """encode(src, lengths) -> memory, keys, h0; decode(...) runs all target steps or one step."""

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        if cfg.src_vocab <= 0 or cfg.tgt_vocab <= 0:
            raise ValueError("model.src_vocab and model.tgt_vocab must be set (they come from the tokenizers)")
        self.cfg = cfg
        E, He, Hd = cfg.n_embd, cfg.enc_hidden, cfg.dec_hidden
        self.src_embed = nn.Embedding(cfg.src_vocab, E, padding_idx=cfg.pad_id)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab, E, padding_idx=cfg.pad_id)
        self.enc_fwd = nn.GRU(E, He, batch_first=True)
        self.enc_bwd = nn.GRU(E, He, batch_first=True)
        # Initial decoder state from the two ends of the source (Bahdanau et al. 2015, A.2.2 uses the backward one).
        self.init = nn.Linear(2 * He, cfg.n_layer * Hd)
        self.key = nn.Linear(2 * He, Hd, bias=False)  # W_a of the "general" score
        self.dec = nn.GRU(E, Hd, cfg.n_layer, batch_first=True, dropout=cfg.dropout if cfg.n_layer > 1 else 0.0)
        self.combine = nn.Linear(2 * He + Hd, E)  # W_c
        self.out_bias = nn.Parameter(torch.zeros(cfg.tgt_vocab))
        self.drop = nn.Dropout(cfg.dropout)

    def encode(self, src: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """src (B, S) ids padded at the end, lengths (B,) >= 1 -> memory (B, S, 2He), keys (B, S, Hd), h0 (L, B, Hd).

        The backward GRU reads each row from its own last token (reverse_within_length), so padding never
        changes a real position's memory; padded positions hold values that the attention mask ignores.
        """
        B, S = src.shape
        lengths = lengths.clamp(min=1, max=S)
        x = self.drop(self.src_embed(src))  # (B, S, E)
        fwd = self.enc_fwd(x)[0]  # (B, S, He)
        bwd = reverse_within_length(self.enc_bwd(reverse_within_length(x, lengths))[0], lengths)  # (B, S, He)
        memory = torch.cat([fwd, bwd], dim=2)  # (B, S, 2He)
        last = fwd.gather(1, (lengths - 1).view(B, 1, 1).expand(B, 1, fwd.shape[2])).squeeze(1)  # (B, He)
        h0 = torch.tanh(self.init(torch.cat([last, bwd[:, 0]], dim=1)))  # (B, L * Hd)
        h0 = h0.view(B, self.cfg.n_layer, self.cfg.dec_hidden).transpose(0, 1).contiguous()  # (L, B, Hd)
        memory = self.drop(memory)
        return memory, self.key(memory), h0

    def decode(self, prev: Tensor, h: Tensor, memory: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """prev (B, T) previous target ids, h (L, B, Hd), mask (B, S) true at real source positions
        -> logits (B, T, V), new h (L, B, Hd), attention (B, T, S). T = 1 is one decoding step."""
        y = self.drop(self.tgt_embed(prev))  # (B, T, E)
        out, h = self.dec(y, h)  # (B, T, Hd)
        scores = torch.bmm(out, keys.transpose(1, 2))  # (B, T, S)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        attn = torch.softmax(scores, dim=2)  # (B, T, S)
        context = torch.bmm(attn, memory)  # (B, T, 2He)
        o = self.drop(torch.tanh(self.combine(torch.cat([context, out], dim=2))))  # (B, T, E)
        # A 2-D linear exports as one Gemm that reads the embedding matrix transposed in place; (B, T, E) @ E^T
        # would export a MatMul with a second, pre-transposed copy of the largest matrix.
        logits = F.linear(o.flatten(0, 1), self.tgt_embed.weight, self.out_bias)  # (B * T, V)
        return logits.view(o.shape[0], o.shape[1], -1), h, attn

    def forward(self, src: Tensor, lengths: Tensor, prev: Tensor) -> Tensor:
        """Teacher forcing: logits (B, T, V) of every target position given the gold previous tokens."""
        memory, keys, h0 = self.encode(src, lengths)
        mask = torch.arange(src.shape[1], device=src.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, S)
        return self.decode(prev, h0, memory, keys, mask)[0]


class EncoderGraph(nn.Module):
    """The encoder.onnx graph: src (B, S), lengths (B,) -> memory, keys, h0."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.model.encode(src, lengths)


class DecoderStepGraph(nn.Module):
    """The decoder.onnx graph, one step: prev (B,), h, memory, keys, mask -> logits (B, V), new h, attention (B, S)."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, prev: Tensor, h: Tensor, memory: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, h, attn = self.model.decode(prev.unsqueeze(1), h, memory, keys, mask)
        return logits.squeeze(1), h, attn.squeeze(1)
