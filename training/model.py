"""Modules and their config dataclasses: CharLM (rnn/lstm/gru) and Classifier (lstm/gru)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

_RNNS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class CharLMConfig:
    cell: str = "lstm"  # "rnn" (tanh, min-char-rnn), "lstm" or "gru"
    vocab_size: int = 0  # set from the tokenizer at build time
    n_layer: int = 2
    n_embd: int = 64  # character embedding; min-char-rnn uses one-hot (n_embd = vocab_size)
    hidden_size: int = 256
    dropout: float = 0.0  # between layers and before the head (Zaremba et al. 2014)
    forget_bias: float = 0.0  # LSTM only: initial forget-gate bias; 1.0 lets memory persist from the first step
    #   (Gers et al. 2000; Jozefowicz et al. 2015 found it closes most of the LSTM's gap to the GRU). 0 = torch's init


class CharLM(nn.Module):
    """Embedding -> stacked recurrent cell -> linear head, with the state passed in and out.

    forward(tokens, *state) returns (logits, *new_state) so one graph serves a whole prompt
    (T = prompt length) and each generated character (T = 1) with the carried state.
    """

    def __init__(self, cfg: CharLMConfig) -> None:
        super().__init__()
        if cfg.cell not in _RNNS:
            raise ValueError(f"model.cell must be one of {sorted(_RNNS)}, got {cfg.cell!r}")
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (it comes from the tokenizer)")
        if cfg.forget_bias and cfg.cell != "lstm":
            raise ValueError(f"model.forget_bias is for an lstm; a {cfg.cell} has no forget gate")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        extra = {"nonlinearity": "tanh"} if cfg.cell == "rnn" else {}
        self.rnn = _RNNS[cfg.cell](cfg.n_embd, cfg.hidden_size, cfg.n_layer, batch_first=True,
                                   dropout=cfg.dropout if cfg.n_layer > 1 else 0.0, **extra)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        if cfg.forget_bias and cfg.cell == "lstm":
            self._init_forget_bias(cfg.forget_bias)

    @torch.no_grad()
    def _init_forget_bias(self, value: float) -> None:
        """Gates are stacked (input, forget, cell, output) in each 4H bias; the two biases add, so b_ih gets the value."""
        H = self.cfg.hidden_size
        for name, bias in self.rnn.named_parameters():
            if name.startswith("bias_"):
                bias[H : 2 * H] = value if name.startswith("bias_ih") else 0.0

    @property
    def n_state(self) -> int:
        return 2 if self.cfg.cell == "lstm" else 1

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        """Zero state, one (L, B, H) tensor per carried quantity: (h, c) for LSTM, (h,) otherwise."""
        shape = (self.cfg.n_layer, batch, self.cfg.hidden_size)
        return tuple(torch.zeros(shape, device=self.head.weight.device) for _ in range(self.n_state))

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        x = self.embed(tokens)  # (B, T, E)
        hx = (state[0], state[1]) if self.cfg.cell == "lstm" else state[0]
        out, new = self.rnn(x, hx)  # (B, T, H)
        logits = self.head(self.drop(out))  # (B, T, V)
        return (logits, *new) if self.cfg.cell == "lstm" else (logits, new)


@dataclass
class ClassifierConfig:
    cell: str = "lstm"  # "lstm" or "gru"
    vocab_size: int = 0  # set from the tokenizer at build time
    n_class: int = 2  # set from the label set at build time
    pad_id: int = 0  # set from the tokenizer at build time
    n_layer: int = 1
    n_embd: int = 128
    hidden_size: int = 128
    bidirectional: bool = True
    dropout: float = 0.5  # on embeddings, between layers and before the head
    embed_dropout: float = 0.0  # drop whole words (Iyyer et al. 2015 word dropout)


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's first `length` steps and leave its padding in place.

    The backward direction of a bidirectional RNN must start at the last real token, not at
    the padding, or a row's result would depend on how long the other rows are.
    The permutation is its own inverse, so it also maps the backward outputs back.
    """
    B, T = x.shape[0], x.shape[1]
    t = torch.arange(T, device=x.device).unsqueeze(0).expand(B, T)  # (B, T)
    L = lengths.unsqueeze(1)
    idx = torch.where(t < L, L - 1 - t, t)  # (B, T)
    return torch.gather(x, 1, idx.unsqueeze(2).expand(x.shape))


class Classifier(nn.Module):
    """Embedding -> (bi)directional LSTM/GRU stack -> mean and max pooling over real tokens -> head.

    Layers are built one direction at a time so that the backward pass can start at each
    row's own end (see reverse_within_length): padding never changes a row's logits.
    """

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        if cfg.cell not in ("lstm", "gru"):
            raise ValueError(f"model.cell must be 'lstm' or 'gru' for a classifier, got {cfg.cell!r}")
        if cfg.vocab_size <= 0 or cfg.n_class < 2:
            raise ValueError("model.vocab_size and model.n_class must be set (from tokenizer and labels)")
        self.cfg = cfg
        n_dir = 2 if cfg.bidirectional else 1
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd, padding_idx=cfg.pad_id)
        self.layers = nn.ModuleList()
        for i in range(cfg.n_layer):
            d_in = cfg.n_embd if i == 0 else cfg.hidden_size * n_dir
            self.layers.append(nn.ModuleList(
                _RNNS[cfg.cell](d_in, cfg.hidden_size, batch_first=True) for _ in range(n_dir)))
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * cfg.hidden_size * n_dir, cfg.n_class)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        B, T = tokens.shape
        lengths = lengths.clamp(min=1, max=T)
        mask = torch.arange(T, device=tokens.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        if self.training and self.cfg.embed_dropout > 0:
            keep = torch.rand(B, T, device=tokens.device) >= self.cfg.embed_dropout
            tokens = torch.where(keep, tokens, torch.full_like(tokens, self.cfg.pad_id))
        x = self.drop(self.embed(tokens))  # (B, T, E)
        for directions in self.layers:
            outs = [directions[0](x)[0]]  # (B, T, H)
            if len(directions) == 2:
                back = directions[1](reverse_within_length(x, lengths))[0]
                outs.append(reverse_within_length(back, lengths))
            x = self.drop(torch.cat(outs, dim=2))  # (B, T, H * n_dir)
        m = mask.unsqueeze(2)
        mean = (x * m).sum(1) / lengths.unsqueeze(1).to(x.dtype)  # (B, D)
        peak = x.masked_fill(~m, float("-inf")).max(dim=1).values  # (B, D)
        return self.head(torch.cat([mean, peak], dim=1))  # (B, C)
