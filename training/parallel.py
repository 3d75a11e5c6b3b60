"""Parallel corpora (one sentence a line, line i of <stem>.<src> translates line i of <stem>.<tgt>)
and length-bucketed batches measured in tokens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import DataError, file_info, read_text


@dataclass
class Pairs:
    source: list[str]
    target: list[str]


def pair_paths(stem: str | Path, source: str, target: str) -> tuple[Path, Path]:
    return Path(f"{stem}.{source}"), Path(f"{stem}.{target}")


def read_pairs(stem: str | Path, source: str, target: str) -> Pairs:
    """Both sides of a parallel file pair; differing line counts or an empty line are errors naming the file."""
    src_path, tgt_path = pair_paths(stem, source, target)
    src, tgt = read_text(src_path).splitlines(), read_text(tgt_path).splitlines()
    if len(src) != len(tgt):
        raise DataError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: not a parallel pair")
    if not src:
        raise DataError(f"{src_path}: no sentences")
    for path, lines in ((src_path, src), (tgt_path, tgt)):
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                raise DataError(f"{path}:{n}: empty sentence")
    return Pairs([s.strip() for s in src], [t.strip() for t in tgt])


def pair_info(stem: str | Path, source: str, target: str) -> dict[str, dict]:
    """Name, path and sha256 of both files of a pair, for checkpoints and meta.json."""
    src_path, tgt_path = pair_paths(stem, source, target)
    return {"source": file_info(src_path), "target": file_info(tgt_path)}


def token_batches(src_lens: np.ndarray, tgt_lens: np.ndarray, batch_tokens: int,
                  rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Indices of pairs grouped so that rows x (longest source + longest target) <= batch_tokens.

    Pairs are sorted by length (ties broken at random when rng is given) so a batch holds sentences
    of about the same length and little padding; with rng the batches come back shuffled, so each
    epoch sees them in a new order. A pair longer than the budget still gets a batch of its own.
    """
    n = len(src_lens)
    noise = rng.random(n) if rng is not None else np.arange(n)
    order = np.lexsort((noise, tgt_lens, src_lens))
    batches, start = [], 0
    while start < n:
        end, max_s, max_t = start, 0, 0
        while end < n:
            i = order[end]
            s, t = max(max_s, src_lens[i]), max(max_t, tgt_lens[i])
            if end > start and (end - start + 1) * (s + t) > batch_tokens:
                break
            max_s, max_t, end = s, t, end + 1
        batches.append(order[start:end])
        start = end
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches
