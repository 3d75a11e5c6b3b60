"""What meta.json must say for each model kind, checked when it is read: one rule per kind, in RULES.

Training writes these fields and the service relies on them, so the rules are part of the artifact
contract (the server's side of a kind is in service/kinds/). A new kind adds its rule here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from service.artifact.files import DECODER_FILE, ENCODER_FILE, SOURCE_TOKENIZER_FILE, TARGET_TOKENIZER_FILE

if TYPE_CHECKING:
    from service.artifact.meta import Meta


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state tensor of a char LM: fed as `input`, returned as `output`, shape [L, B, H]."""

    input: str
    output: str
    n_layer: int
    hidden_size: int


def state_specs(cell: str, n_layer: int, hidden_size: int) -> list[StateSpec]:
    """LSTM carries (h, c); GRU and the vanilla RNN carry h only."""
    names = [("h0", "hn"), ("c0", "cn")] if cell == "lstm" else [("h0", "hn")]
    return [StateSpec(i, o, n_layer, hidden_size) for i, o in names]


def _stateful(meta: Meta) -> None:
    """A step graph's state is exactly what its cell carries at its sizes; it has no labels."""
    expected = state_specs(meta.cell, meta.sizes["n_layer"], meta.sizes["hidden_size"])
    if meta.state != expected:
        raise ValueError(f"meta.json state {[asdict(s) for s in meta.state]} is not what a {meta.cell} of these sizes "
                         f"carries: {[asdict(s) for s in expected]}")
    if meta.labels:
        raise ValueError(f"meta.json of a {meta.kind} must not list labels")


def _char_lm(meta: Meta) -> None:
    """A char LM's state is exactly what its cell carries at its sizes; it has no labels."""
    _stateful(meta)


def _classifier(meta: Meta) -> None:
    """A classifier carries no state between calls and names at least two labels, as many as sizes.n_class says."""
    if meta.state:
        raise ValueError("meta.json of a classifier must not list state tensors")
    if len(meta.labels) < 2:
        raise ValueError("meta.json of a classifier must list at least two labels")
    if meta.sizes.get("n_class", len(meta.labels)) != len(meta.labels):
        raise ValueError(f"meta.json sizes.n_class is {meta.sizes['n_class']!r:.40} but it lists "
                         f"{len(meta.labels)} labels")


# The objects of meta.json's `translator` section.
TRANSLATOR_KEYS = ("encoder", "decoder", "tokenizers", "languages", "special_ids", "max_len", "beam")
TRANSLATOR_FILES = {("encoder", "file"): ENCODER_FILE, ("decoder", "file"): DECODER_FILE,
                    ("tokenizers", "source"): SOURCE_TOKENIZER_FILE, ("tokenizers", "target"): TARGET_TOKENIZER_FILE}
SPECIALS = ("pad", "unk", "bos", "eos")
MAX_SRC_VOCAB = 1 << 22  # as sizes.vocab_size (meta.MAX_SIZES)
MAX_WIDTH = 1 << 16  # as sizes.hidden_size
MAX_LEN_A, MAX_LEN_B = 64.0, 1 << 16  # a length rule beyond these is a mistake, not a model


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _translator(meta: Meta) -> None:
    """A translator's decoder state is what its cell carries; it names its files (the contract's names), the
    special token ids (inside both vocabularies), a max-length rule and the beam settings its BLEU used."""
    _stateful(meta)  # of its decoder-step graph
    sizes, t = meta.sizes, meta.translator
    missing = [k for k in TRANSLATOR_KEYS if not isinstance(t.get(k), dict)]
    if missing:
        raise ValueError(f"meta.json translator lacks the object(s) {missing}")
    for (section, key), name in TRANSLATOR_FILES.items():
        if t[section].get(key) != name:
            raise ValueError(f"meta.json translator.{section}.{key} must be {name!r}, got {t[section].get(key)!r:.60}")
    for key, limit in (("src_vocab_size", MAX_SRC_VOCAB), ("memory_size", MAX_WIDTH)):
        if not (type(sizes.get(key)) is int and 0 < sizes[key] <= limit):
            raise ValueError(f"meta.json sizes.{key} must be an integer from 1 to {limit}, got {sizes.get(key)!r:.40}")
    ids = t["special_ids"]
    vocab = min(sizes["vocab_size"], sizes["src_vocab_size"])
    for name in SPECIALS:
        if not (type(ids.get(name)) is int and 0 <= ids[name] < vocab):
            raise ValueError(f"meta.json translator.special_ids.{name} must be a token id of both vocabularies "
                             f"(0 to {vocab - 1}), got {ids.get(name)!r:.40}")
    if len({ids[name] for name in SPECIALS}) != len(SPECIALS):
        raise ValueError(f"meta.json translator.special_ids must be distinct, got {ids}")
    rule = t["max_len"]
    if not (_number(rule.get("a")) and 0 <= rule["a"] <= MAX_LEN_A and type(rule.get("b")) is int
            and 1 <= rule["b"] <= MAX_LEN_B):
        raise ValueError(f"meta.json translator.max_len needs a number a in 0..{MAX_LEN_A:g} and an integer b in "
                         f"1..{MAX_LEN_B} (at most floor(a * source_tokens + b) target tokens)")
    beam = t["beam"]
    if not (type(beam.get("beam_size")) is int and beam["beam_size"] >= 1):
        raise ValueError("meta.json translator.beam.beam_size must be an integer >= 1")
    if not (_number(beam.get("length_penalty")) and beam["length_penalty"] >= 0):
        raise ValueError("meta.json translator.beam.length_penalty must be a number >= 0")


# The objects of meta.json's `captioner` section.
CAPTIONER_KEYS = ("encoder", "decoder", "tokenizer", "image", "grid", "special_ids", "max_len", "beam")
CAPTIONER_FILES = {("encoder", "file"): ENCODER_FILE, ("decoder", "file"): DECODER_FILE,
                   ("tokenizer", "file"): TARGET_TOKENIZER_FILE}
MAX_IMAGE_SIDE = 4096  # the encoder's input side: an image graph beyond this is a mistake, not a model
MAX_CAPTION_LEN = 1024


def _captioner(meta: Meta) -> None:
    """A captioner's decoder state is what its cell carries; it names its files (the contract's names), the
    encoder's input size, the feature grid it attends over, the special token ids, a caption length limit and
    the beam settings its reported scores used."""
    _stateful(meta)  # of its decoder-step graph
    sizes, c = meta.sizes, meta.captioner
    missing = [k for k in CAPTIONER_KEYS if not isinstance(c.get(k), dict)]
    if missing:
        raise ValueError(f"meta.json captioner lacks the object(s) {missing}")
    for (section, key), name in CAPTIONER_FILES.items():
        if c[section].get(key) != name:
            raise ValueError(f"meta.json captioner.{section}.{key} must be {name!r}, got {c[section].get(key)!r:.60}")
    if not (type(sizes.get("memory_size")) is int and 0 < sizes["memory_size"] <= MAX_WIDTH):
        raise ValueError(f"meta.json sizes.memory_size must be an integer from 1 to {MAX_WIDTH}, "
                         f"got {sizes.get('memory_size')!r:.40}")
    for section, keys, limit in (("image", ("height", "width"), MAX_IMAGE_SIDE), ("grid", ("rows", "cols"), MAX_IMAGE_SIDE)):
        for key in keys:
            value = c[section].get(key)
            if not (type(value) is int and 0 < value <= limit):
                raise ValueError(f"meta.json captioner.{section}.{key} must be an integer from 1 to {limit}, "
                                 f"got {value!r:.40}")
    ids = c["special_ids"]
    for name in SPECIALS:
        if not (type(ids.get(name)) is int and 0 <= ids[name] < sizes["vocab_size"]):
            raise ValueError(f"meta.json captioner.special_ids.{name} must be a token id "
                             f"(0 to {sizes['vocab_size'] - 1}), got {ids.get(name)!r:.40}")
    if len({ids[name] for name in SPECIALS}) != len(SPECIALS):
        raise ValueError(f"meta.json captioner.special_ids must be distinct, got {ids}")
    tokens = c["max_len"].get("tokens")
    if not (type(tokens) is int and 1 <= tokens <= MAX_CAPTION_LEN):
        raise ValueError(f"meta.json captioner.max_len.tokens must be an integer from 1 to {MAX_CAPTION_LEN}")
    beam = c["beam"]
    if not (type(beam.get("beam_size")) is int and beam["beam_size"] >= 1):
        raise ValueError("meta.json captioner.beam.beam_size must be an integer >= 1")
    if not (_number(beam.get("length_penalty")) and beam["length_penalty"] >= 0):
        raise ValueError("meta.json captioner.beam.length_penalty must be a number >= 0")


RULES: dict[str, Callable[[Meta], None]] = {"char_lm": _char_lm, "classifier": _classifier, "translator": _translator,
                                           "captioner": _captioner}
# meta.json sections that belong to one kind: any other kind must leave them empty.
OWN_SECTIONS = {"translator": "translator", "captioner": "captioner"}
KINDS = tuple(RULES)
