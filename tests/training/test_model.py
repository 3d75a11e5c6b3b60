"""Model semantics that serving relies on: state carried across calls, padding-invariant classification."""

import pytest
import torch

from training.model import CharLM, CharLMConfig, Classifier, ClassifierConfig, reverse_within_length


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_prefill_equals_one_character_at_a_time(cell):
    torch.manual_seed(0)
    m = CharLM(CharLMConfig(cell=cell, vocab_size=20, n_layer=2, n_embd=8, hidden_size=16)).eval()
    x = torch.randint(0, 20, (3, 12))
    with torch.no_grad():
        logits, *state = m(x, *m.init_state(3))
        s = m.init_state(3)
        steps = []
        for t in range(12):
            out, *s = m(x[:, t : t + 1], *s)
            steps.append(out)
    assert torch.allclose(logits, torch.cat(steps, 1), atol=1e-6)
    for a, b in zip(state, s, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert len(state) == (2 if cell == "lstm" else 1)


def test_reverse_within_length_keeps_padding_in_place():
    x = torch.arange(10).view(2, 5, 1).float()
    r = reverse_within_length(x, torch.tensor([3, 5]))
    assert r[:, :, 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]
    assert torch.equal(reverse_within_length(r, torch.tensor([3, 5])), x)


@pytest.mark.parametrize("cell,bidirectional,n_layer", [("lstm", True, 2), ("gru", True, 1), ("lstm", False, 1)])
def test_classifier_row_is_the_same_alone_and_padded_among_longer_rows(cell, bidirectional, n_layer):
    torch.manual_seed(0)
    m = Classifier(ClassifierConfig(cell=cell, vocab_size=30, n_class=3, pad_id=0, n_layer=n_layer, n_embd=8,
                                    hidden_size=8, bidirectional=bidirectional)).eval()
    short = torch.randint(1, 30, (1, 4))
    batch = torch.randint(1, 30, (3, 15))
    batch[1] = 0
    batch[1, :4] = short
    with torch.no_grad():
        alone = m(short, torch.tensor([4]))
        padded = m(batch, torch.tensor([15, 4, 9]))
        unpadded_other = m(batch[2:3, :9], torch.tensor([9]))
    assert torch.allclose(alone[0], padded[1], atol=1e-6)
    assert torch.allclose(unpadded_other[0], padded[2], atol=1e-6)


def test_unknown_cell_is_refused():
    with pytest.raises(ValueError, match=r"model\.cell"):
        CharLM(CharLMConfig(cell="transformer", vocab_size=5))
    with pytest.raises(ValueError, match=r"model\.cell"):
        Classifier(ClassifierConfig(cell="rnn", vocab_size=5))
