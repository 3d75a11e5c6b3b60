"""Flickr8k (Hodosh et al. 2013) as the captioner reads it, and its word-level tokenizer.

The folder holds images/, captions.token.txt ("<image>#<k>\\t<caption>", 5 per image), the official
split_{train,dev,test}.txt lists and images_manifest.tsv (which images come from originals and which from
squashed 224 x 224 copies: `source_kind`). The vocabulary is learned on the training captions only.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from training.search import Specials

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)  # ids 0..3
SPECIAL_IDS = Specials(pad=0, bos=2, eos=3)
SPLITS = ("train", "dev", "test")


@dataclass
class CaptionSplit:
    """The images of one split (sorted names) and their reference captions (raw text, in file order)."""

    root: Path
    names: list[str]
    captions: list[list[str]]
    kinds: list[str]  # source_kind of each image: "original" or "resized224_squashed"

    def image_bytes(self, i: int) -> bytes:
        return (self.root / "images" / self.names[i]).read_bytes()


def read_split(root: str | Path, split: str, limit: int = 0) -> CaptionSplit:
    """One official split; `limit` > 0 keeps its first `limit` images by name (small runs and tests)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    if not (root / "captions.token.txt").is_file():
        raise FileNotFoundError(f"{root}: no captions.token.txt (the Flickr8k folder is ../shared/data/flickr8k)")
    names = sorted(set((root / f"split_{split}.txt").read_text(encoding="utf-8").split()))
    if limit > 0:
        names = names[:limit]
    wanted = set(names)
    captions: dict[str, list[str]] = {n: [] for n in names}
    for line in (root / "captions.token.txt").read_text(encoding="utf-8").splitlines():
        key, _, text = line.partition("\t")
        name = key.rsplit("#", 1)[0]
        if name in wanted and text.strip():
            captions[name].append(text.strip())
    with (root / "images_manifest.tsv").open(encoding="utf-8", newline="") as f:
        kinds = {row["name"]: row["source_kind"] for row in csv.DictReader(f, delimiter="\t") if row["name"] in wanted}
    missing = [n for n in names if not captions[n] or n not in kinds]
    if missing:
        raise ValueError(f"{root}: {len(missing)} {split} images lack captions or a manifest row, e.g. {missing[0]}")
    return CaptionSplit(root, names, [captions[n] for n in names], [kinds[n] for n in names])


def learn_tokenizer(captions: Sequence[str], min_freq: int) -> Tokenizer:
    """A WordLevel tokenizer: lowercased, split on whitespace and punctuation; words seen fewer than min_freq
    times map to <unk>. Decoding joins words with spaces."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    trainer = trainers.WordLevelTrainer(min_frequency=max(min_freq, 1), special_tokens=list(SPECIALS),
                                        show_progress=False)
    tok.train_from_iterator(captions, trainer)
    for i, s in enumerate(SPECIALS):
        if tok.token_to_id(s) != i:
            raise AssertionError(f"special token {s} got id {tok.token_to_id(s)}, not {i}")
    return tok


@dataclass
class CaptionTokenizer:
    """The target tokenizer of a captioner, saved in checkpoints as its JSON string."""

    target: Tokenizer

    def encode(self, captions: Sequence[str], max_tokens: int) -> list[np.ndarray]:
        """Word ids followed by EOS, cut to at most max_tokens (EOS kept last)."""
        out = []
        for e in self.target.encode_batch(list(captions)):
            ids = e.ids[: max_tokens - 1]
            out.append(np.asarray([*ids, SPECIAL_IDS.eos], dtype=np.int64))
        return out

    def words(self, ids: Sequence[int]) -> list[str]:
        """Token ids -> words, specials skipped."""
        return [w for w in (self.target.id_to_token(int(i)) for i in ids) if w is not None and w not in SPECIALS]

    def split(self, text: str) -> list[str]:
        """A reference caption as the tokenizer splits it (normalised), unknown words kept as they are."""
        normal = self.target.normalizer.normalize_str(text)
        return [w for w, _ in self.target.pre_tokenizer.pre_tokenize_str(normal)]

    def decode(self, seqs: Sequence[Sequence[int]]) -> list[str]:
        return self.target.decode_batch([[int(i) for i in s] for s in seqs], skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self.target.get_vocab_size()

    def to_dict(self) -> dict[str, str]:
        return {"target": self.target.to_str()}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> CaptionTokenizer:
        return cls(Tokenizer.from_str(d["target"]))
