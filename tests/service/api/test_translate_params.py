"""Translate request validation without a server: the length limit, and a text whose tokenizer yields nothing."""

from __future__ import annotations

import numpy as np
import pytest

from service.api.translate_params import LengthRule, Search, seq2seq_params, source_ids
from service.errors import InvalidArgument
from service.settings import Settings


def test_the_length_limit_is_the_models_rule_capped_by_max_tokens():
    rule, ids = LengthRule(1.5, 10), np.arange(7)  # floor(1.5 * 7 + 10) = 20
    assert seq2seq_params(ids, Search(1, 0.6, None, False), rule, 64, 0.05).max_tokens == 20
    assert seq2seq_params(ids, Search(1, 0.6, 5, False), rule, 64, 0.05).max_tokens == 5
    assert seq2seq_params(ids, Search(3, 0.6, 500, True), rule, 64, 0.05).max_tokens == 20


def test_a_text_without_tokens_is_named():
    with pytest.raises(InvalidArgument, match=r"^texts\[2\]: has no tokens$"):
        source_ids("\u200b", "texts[2]", lambda text: np.zeros(0, np.int64), Settings())
