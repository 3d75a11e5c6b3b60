"""Translation tokenizers from the `tokenizers` package: BPE subwords (Sennrich et al. 2016) or words.

One tokenizer per language, learned on the training split only. Separate vocabularies, not one joint
one: the target softmax is the largest cost of every decoder step, and a joint vocabulary would make it
score German subwords that an English decoder never emits. (German and English share few surface forms
in Multi30k besides names and numbers, which a joint vocabulary would segment alike.)

BPE text is split on whitespace only, with the space kept as "▁" (the SentencePiece convention), so
decode(encode(text)) gives the text back: BLEU is computed on detokenized output, with no detokenizer
to guess where spaces went. The word level splits punctuation off and joins words with spaces on decode.
Both files load in the service with `tokenizers` alone (no torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)  # ids 0..3 in every vocabulary


def learn(lines: Sequence[str], level: str, vocab_size: int, min_freq: int) -> Tokenizer:
    """A tokenizer learned on `lines`; the four specials take ids 0-3."""
    trainer: trainers.Trainer
    if level == "bpe":
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=max(min_freq, 1),
                                      special_tokens=list(SPECIALS), show_progress=False)
    elif level == "word":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
        trainer = trainers.WordLevelTrainer(min_frequency=max(min_freq, 1), special_tokens=list(SPECIALS),
                                            show_progress=False)
    else:
        raise ValueError(f"data.level must be 'bpe' or 'word' for translation, got {level!r}")
    tok.normalizer = normalizers.NFC()
    tok.train_from_iterator(lines, trainer)
    for i, s in enumerate(SPECIALS):
        if tok.token_to_id(s) != i:
            raise AssertionError(f"special token {s} got id {tok.token_to_id(s)}, not {i}")
    return tok


@dataclass
class TokenizerPair:
    """The source and target tokenizers of a translation model, saved in checkpoints as JSON strings."""

    source: Tokenizer
    target: Tokenizer

    def encode_source(self, lines: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64) for e in self.source.encode_batch(list(lines))]

    def encode_target(self, lines: Sequence[str]) -> list[np.ndarray]:
        """Target ids followed by EOS: what the decoder must produce, stop included."""
        eos = SPECIALS.index(EOS)
        return [np.asarray([*e.ids, eos], dtype=np.int64) for e in self.target.encode_batch(list(lines))]

    def decode_target(self, seqs: Sequence[Sequence[int]]) -> list[str]:
        """Ids (without EOS) -> detokenized text; special tokens are skipped."""
        return self.target.decode_batch([[int(i) for i in s] for s in seqs], skip_special_tokens=True)

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source.to_str(), "target": self.target.to_str()}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> TokenizerPair:
        return cls(Tokenizer.from_str(d["source"]), Tokenizer.from_str(d["target"]))
