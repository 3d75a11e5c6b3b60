"""The data a recipe names, read the same way by training and by the cell search: UTF-8 text corpora and
labelled sentences. Every reading error names the file (and line) so a user can fix their own corpus."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """Bad input data: the message names the file and, where it can, the line."""


def read_text(path: str | Path) -> str:
    """Whole file as UTF-8; a bad byte is reported with its line and column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}:{line}:{col}: not UTF-8 (byte 0x{raw[e.start]:02x})") from None


@dataclass
class Sentences:
    texts: list[str]
    labels: np.ndarray  # int64 class ids


def _parse_label(raw: str, labels: dict[str, str], where: str) -> int:
    order = list(labels)
    if raw not in labels:
        raise DataError(f"{where}: label {raw!r} is not in the label set {order}")
    return order.index(raw)


def sentence_format(path: Path, first_line: str, labels: dict[str, str]) -> str:
    """The format a file is in, from its first line: a header naming `sentence` and `label` is GLUE TSV, a line
    that starts with a known label and a space is `<label> <sentence>`; otherwise tabs mean TSV, and last the suffix."""
    if {"sentence", "label"} <= set(first_line.split("\t")):
        return "tsv"
    if first_line.partition(" ")[0] in labels:
        return "label_line"
    return "tsv" if "\t" in first_line or path.suffix == ".tsv" else "label_line"


def read_sentences(path: str | Path, labels: dict[str, str], fmt: str = "auto") -> Sentences:
    """GLUE TSV (header with `sentence` and `label` columns) or `<label> <sentence>` lines; "auto" detects which."""
    path = Path(path)
    if fmt not in ("tsv", "label_line", "auto"):
        raise DataError(f"{path}: unknown sentence format {fmt!r} (use 'tsv', 'label_line' or 'auto')")
    lines = read_text(path).splitlines()
    if fmt == "auto":
        fmt = sentence_format(path, next((line for line in lines if line.strip()), ""), labels)
    texts, ids = [], []
    if fmt == "tsv":
        if not lines:
            raise DataError(f"{path}: empty file (expected a header 'sentence<TAB>label')")
        header = lines[0].split("\t")
        if "sentence" not in header or "label" not in header:
            raise DataError(f"{path}:1: header must name 'sentence' and 'label' columns, got {header}")
        si, li = header.index("sentence"), header.index("label")
        for n, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) <= max(si, li) or not cols[li].strip():
                raise DataError(f"{path}:{n}: row has no label")
            texts.append(cols[si].strip())
            ids.append(_parse_label(cols[li].strip(), labels, f"{path}:{n}"))
    else:
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            raw, _, text = line.strip().partition(" ")
            if not text.strip():
                raise DataError(f"{path}:{n}: line has no sentence after the label {raw!r}")
            texts.append(text.strip())
            ids.append(_parse_label(raw, labels, f"{path}:{n}"))
    if not texts:
        raise DataError(f"{path}: no labelled sentences")
    return Sentences(texts, np.asarray(ids, dtype=np.int64))
