"""Score an artifact's graph with ONNX Runtime on the validation data its meta.json names (numpy only, no torch).

Both graphs of a quantization are scored here with the same windows and the same carried state, so the
difference between the two figures is the quantization's alone.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service import artifact
from service.artifact import Meta
from service.artifact.corpus import DataError, read_sentences, read_text
from service.artifact.tokenizer import Tokenizer
from training import pycorpus

LM_EVAL_CHARS = 30_000  # validation characters scored per graph: the gate's noise is far below its 0.01 nats
LM_ROWS, LM_WINDOW = 32, 128  # contiguous rows of the text, fed WINDOW characters per call with the state carried


def _val_file(meta: Meta, root: Path) -> Path:
    """The validation file meta.json names, checked against its recorded sha256."""
    val = meta.data.get("val") or {}
    if "path" not in val:
        raise DataError("meta.json data.val names no validation file: the quality gate has nothing to score")
    path = Path(val["path"]) if Path(val["path"]).is_absolute() else root / val["path"]
    built = pycorpus.provide(path, val["path"])
    if (want := val.get("sha256")) and hashlib.sha256(Path(path).read_bytes()).hexdigest() != want:
        how = " (rebuilt from this machine's Python standard library: another Python's differs)" if built else ""
        raise DataError(f"{path}: sha256 differs from meta.json data.val.sha256{how}; not the data the model was "
                        "validated on")
    return path


def lm_val_ids(meta: Meta, tok: Tokenizer, root: Path, n_chars: int = LM_EVAL_CHARS) -> np.ndarray:
    """The first n_chars ids of the validation split (the last val_fraction of the text, as training cut it)."""
    text = read_text(_val_file(meta, root))
    fraction = float(meta.training.get("config", {}).get("data", {}).get("val_fraction", 0.1))
    return tok.encode(text[int(len(text) * (1 - fraction)):][:n_chars])


def lm_loss(sess: ort.InferenceSession, meta: Meta, ids: np.ndarray) -> float:
    """Mean next-character cross-entropy (nats/char) over ids cut into LM_ROWS contiguous rows."""
    n = (len(ids) - 1) // LM_ROWS
    if n < 1:
        raise DataError(f"the validation text has {len(ids)} characters; the gate needs at least {LM_ROWS + 1}")
    x = np.stack([ids[r * n : r * n + n] for r in range(LM_ROWS)])  # (B, n)
    y = np.stack([ids[r * n + 1 : r * n + n + 1] for r in range(LM_ROWS)])
    state = {s.input: np.zeros((s.n_layer, LM_ROWS, s.hidden_size), np.float32) for s in meta.state}
    total = 0.0
    for t in range(0, n, LM_WINDOW):
        logits, *new = sess.run(None, {artifact.TOKENS: x[:, t : t + LM_WINDOW], **state})
        z = logits.astype(np.float64)  # (B, T, V)
        z -= z.max(axis=2, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=2, keepdims=True))
        total -= np.take_along_axis(logp, y[:, t : t + LM_WINDOW, None], axis=2).sum()
        state = {s.input: v for s, v in zip(meta.state, new, strict=True)}
    return total / y.size


def classifier_val(meta: Meta, tok: Tokenizer, root: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Token rows and label ids of the validation sentences."""
    data = meta.training.get("config", {}).get("data", {})
    labels = data.get("labels") or {str(i): x for i, x in enumerate(meta.labels)}
    sents = read_sentences(_val_file(meta, root), labels, data.get("format", "auto"))
    rows = [ids if len(ids := tok.encode(t)) else np.array([tok.pad_id], np.int64) for t in sents.texts]
    return rows, sents.labels


def classifier_accuracy(sess: ort.InferenceSession, rows: list[np.ndarray], labels: np.ndarray, pad_id: int,
                        batch: int = 64) -> float:
    """Accuracy over the rows, run sorted by length in padded batches (padding changes no row's result)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    predicted = np.empty(len(rows), np.int64)
    for start in range(0, len(order), batch):
        group = order[start : start + batch]
        lengths = np.array([len(rows[i]) for i in group], np.int64)
        tokens = np.full((len(group), int(lengths.max())), pad_id, np.int64)
        for j, i in enumerate(group):
            tokens[j, : len(rows[i])] = rows[i]
        logits = sess.run([artifact.LOGITS], {artifact.TOKENS: tokens, artifact.LENGTHS: lengths})[0]
        predicted[group] = logits.argmax(axis=1)
    return float((predicted == labels).mean())
