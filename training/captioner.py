"""Show, Attend and Tell (Xu et al. 2015), soft attention: an LSTM that attends over the image's feature grid
while it writes each word, and its config dataclass.

With a_i (i = 1..R) the encoder's feature vectors (R = rows * cols regions, D = 1280 wide), y the words:

    h_0, c_0 = tanh(f_init_h(mean_i a_i)), tanh(f_init_c(mean_i a_i))                  §4.2 initialisation
    e_ti     = w . tanh(W_a a_i + U_a h_{t-1} + b)      alpha_t = softmax_i(e_ti)         additive attention (§4.2)
    beta_t   = sigmoid(f_beta(h_{t-1}))                 z_t = beta_t sum_i alpha_ti a_i   gating scalar (§4.2.1)
    h_t, c_t = LSTM([E y_{t-1}; z_t], (h_{t-1}, c_{t-1}))
    p(y_t)   = softmax(L_o(E y_{t-1} + L_h h_t + L_z z_t))                              deep output layer (eq. 7)

trained with cross-entropy plus the doubly stochastic regularisation lambda sum_i (1 - sum_t alpha_ti)^2
(eq. 14), which asks the model to look at every part of the image over the whole caption.
W_a a_i does not depend on t: the encoder graph computes it once per image (`keys`).
With use_attention false, z_t is the mean feature instead (alpha uniform): the same decoder without attention,
for the with/without comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from training.image_encoder import FEATURES, EfficientNetLite0


@dataclass
class CaptionerConfig:
    vocab_size: int = 0  # set from the tokenizer at build time
    pad_id: int = 0  # set from the tokenizer at build time
    feature_size: int = FEATURES  # D: the encoder's channels (EfficientNet-Lite0: 1280)
    n_embd: int = 256  # word embedding E y, and the deep output's width
    hidden_size: int = 384  # LSTM h and c
    attn_size: int = 256  # width of the additive attention's tanh layer
    dropout: float = 0.3  # on h_t before the deep output, and on the embeddings
    use_attention: bool = True  # false: z_t = the mean feature (no attention), for the comparison
    attention_reg: float = 1.0  # lambda of the doubly stochastic regularisation (Xu et al. use 1)


class Captioner(nn.Module):
    """encode(features) -> memory, keys, h0, c0; step(...) one word; forward(...) teacher-forced logits and alphas."""

    def __init__(self, cfg: CaptionerConfig) -> None:
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (it comes from the tokenizer)")
        self.cfg = cfg
        D, E, H, A = cfg.feature_size, cfg.n_embd, cfg.hidden_size, cfg.attn_size
        self.embed = nn.Embedding(cfg.vocab_size, E, padding_idx=cfg.pad_id)
        self.init_h, self.init_c = nn.Linear(D, H), nn.Linear(D, H)
        self.attn_feat = nn.Linear(D, A)  # W_a (+ b)
        self.attn_hidden = nn.Linear(H, A, bias=False)  # U_a
        self.attn_score = nn.Linear(A, 1)  # w
        self.gate = nn.Linear(H, 1)  # f_beta
        self.cell = nn.LSTMCell(E + D, H)
        self.out_hidden, self.out_context = nn.Linear(H, E), nn.Linear(D, E, bias=False)  # L_h, L_z
        self.out = nn.Linear(E, cfg.vocab_size)  # L_o
        self.drop = nn.Dropout(cfg.dropout)

    def encode(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """features (B, D, rows, cols) -> memory (B, R, D) row-major, keys (B, R, A), h0 and c0 (1, B, H)."""
        memory = features.flatten(2).transpose(1, 2)  # (B, R, D)
        mean = memory.mean(dim=1)  # (B, D)
        h0, c0 = torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))  # (B, H)
        return memory, self.attn_feat(memory), h0.unsqueeze(0), c0.unsqueeze(0)

    def _attend(self, h: Tensor, memory: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """h (B, H) the previous state -> z (B, D) gated context, alpha (B, R)."""
        if self.cfg.use_attention:
            e = self.attn_score(torch.tanh(keys + self.attn_hidden(h).unsqueeze(1))).squeeze(2)  # (B, R)
            alpha = torch.softmax(e.masked_fill(~mask, float("-inf")), dim=1)
        else:
            alpha = mask.float() / mask.sum(dim=1, keepdim=True)  # the mean feature
        context = torch.bmm(alpha.unsqueeze(1), memory).squeeze(1)  # (B, D)
        return torch.sigmoid(self.gate(h)) * context, alpha

    def _logits(self, emb: Tensor, h: Tensor, z: Tensor) -> Tensor:
        """The deep output layer: (..., E), (..., H), (..., D) -> (..., V)."""
        return self.out(self.drop(emb + self.out_hidden(self.drop(h)) + self.out_context(z)))

    def step(self, prev: Tensor, h: Tensor, c: Tensor, memory: Tensor, keys: Tensor,
             mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One word: prev (B,), h and c (1, B, H), mask (B, R) -> logits (B, V), hn, cn (1, B, H), alpha (B, R).

        alpha is where the model looked to write this word (it attends from the state before the word)."""
        emb = self.drop(self.embed(prev))  # (B, E)
        z, alpha = self._attend(h[0], memory, keys, mask)
        hn, cn = self.cell(torch.cat([emb, z], dim=1), (h[0], c[0]))
        return self._logits(emb, hn, z), hn.unsqueeze(0), cn.unsqueeze(0), alpha

    def forward(self, features: Tensor, prev: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing: features (B, D, rows, cols), prev (B, T) the gold previous words (BOS first)
        -> logits (B, T, V), alphas (B, T, R)."""
        memory, keys, h, c = self.encode(features)
        h, c = h[0], c[0]
        mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        emb = self.drop(self.embed(prev))  # (B, T, E)
        hs, zs, alphas = [], [], []
        for t in range(prev.shape[1]):  # z_t depends on h_{t-1}: the recurrence runs one step at a time
            z, alpha = self._attend(h, memory, keys, mask)
            h, c = self.cell(torch.cat([emb[:, t], z], dim=1), (h, c))
            hs.append(h)
            zs.append(z)
            alphas.append(alpha)
        logits = self._logits(emb, torch.stack(hs, 1), torch.stack(zs, 1))  # (B, T, V), all steps at once
        return logits, torch.stack(alphas, 1)


class EncoderGraph(nn.Module):
    """The encoder.onnx graph: image (B, 3, H, W) in [-1, 1] -> memory, keys, h0, c0."""

    def __init__(self, cnn: EfficientNetLite0, model: Captioner) -> None:
        super().__init__()
        self.cnn, self.model = cnn, model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.model.encode(self.cnn.features(image))


class DecoderStepGraph(nn.Module):
    """The decoder.onnx graph: prev (B,), h0, c0, memory, keys, mask -> logits (B, V), hn, cn, attention (B, R)."""

    def __init__(self, model: Captioner) -> None:
        super().__init__()
        self.model = model

    def forward(self, prev: Tensor, h: Tensor, c: Tensor, memory: Tensor, keys: Tensor,
                mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.model.step(prev, h, c, memory, keys, mask)
