"""model.forget_bias: an LSTM starts with its forget gates open by that much; nothing else changes."""

from __future__ import annotations

import pytest
import torch

from training.model import CharLM, CharLMConfig


def _lm(**kw) -> CharLM:
    torch.manual_seed(0)
    return CharLM(CharLMConfig(vocab_size=11, n_layer=2, n_embd=4, hidden_size=6, **kw))


def test_forget_gates_start_at_the_bias_and_every_other_parameter_is_torchs_init():
    plain, opened = _lm(), _lm(forget_bias=1.0)
    H = 6
    for (name, p), (_, q) in zip(plain.named_parameters(), opened.named_parameters(), strict=True):
        if not name.startswith("rnn.bias_"):
            assert torch.equal(p, q), name
            continue
        keep = torch.ones(4 * H, dtype=torch.bool)
        keep[H : 2 * H] = False
        assert torch.equal(p[keep], q[keep]), name  # input, cell and output gates untouched
    for layer in (0, 1):
        total = getattr(opened.rnn, f"bias_ih_l{layer}") + getattr(opened.rnn, f"bias_hh_l{layer}")
        assert torch.equal(total[H : 2 * H], torch.ones(H))


def test_a_cell_without_a_forget_gate_refuses_it():
    with pytest.raises(ValueError, match="forget_bias is for an lstm; a gru has no forget gate"):
        _lm(cell="gru", forget_bias=1.0)
