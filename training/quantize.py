"""Quantize an artifact's graph to int8 weights, verify it like an export, and gate it on validation quality.

Two methods (METHODS):
- "static" (LSTM and GRU char LMs and LSTM classifiers, the default for them): training/int8_lstm.py and
  int8_gru.py rebuild a char LM's graph, int8_classifier.py a classifier's LSTM nodes, with the cell as int8
  MatMuls and fixed activation scales (training/int8_graph.py), so every row of a batch is computed on its
  own. Required: a char LM's prefill == steps and a seeded stream's text the same alone and batched, as with
  fp32; a classifier's rows padded and batched give what they give alone (ROW_TOL, float summation order).
- "dynamic" (any graph, the default for the others): ONNX Runtime's quantize_dynamic turns the LSTM nodes
  into DynamicQuantizeLSTM and the projections into MatMulInteger. Activation scales are computed per
  call over the whole input tensor, so one row's result depends on the others: the checks require
  prefill == steps and padded == alone to stay close (probabilities within QUANT_PROB_TOL) and record how
  long a seeded stream's text stays the same alone and batched.
The quality gate bounds the cost on the validation data meta.json records. A graph that fails is refused,
with the figures. Needs only onnxruntime, onnx and numpy: it runs on the artifact, never on a checkpoint.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

from service import artifact
from service.artifact import Meta
from service.artifact.session import make_session
from service.artifact.tokenizer import Tokenizer
from training import int8_classifier, int8_gru, int8_lstm, ort_eval

LM_LOSS_GATE = 0.01  # nats/char the int8 graph may lose against fp32 on the validation characters
ACCURACY_GATE = 0.005  # accuracy (0.5 point) the int8 classifier may lose
# Max difference of next-token probabilities, prefill vs steps and padded vs alone: activation scales follow
# the call's tensor, so these differ by ~0.01-0.03 on the bundled LMs (fp32: exactly 0).
QUANT_PROB_TOL = 0.05
# The same for a static classifier, whose rows are computed alone: only the order of the pooling's float sums
# changes with the padding (the fp32 graph's own difference: ~2e-8).
ROW_TOL = 1e-6
SAMPLED_CHARS = 200  # characters each seeded stream writes in the batch-invariance check

Quantizer = Callable[[Path, Path], None]


class QuantizationError(ValueError):
    """The quantized graph failed a check or the quality gate: nothing was written."""


def dynamic_int8(src: Path, dst: Path) -> None:
    """QInt8 weights, per tensor: on the bundled LSTM it matched per-channel's quality and speed (docs/serving.md)."""
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=False)


def static_int8(src: Path, dst: Path) -> None:
    """The graph rebuilt with int8 MatMuls and fixed activation scales, by the builder of its kind and cell."""
    model = onnx.load(str(src))
    if artifact.LENGTHS in {i.name for i in model.graph.input}:
        build = int8_classifier.build
    else:  # int8_lstm refuses a graph without LSTM nodes
        build = int8_gru.build if any(n.op_type == "GRU" for n in model.graph.node) else int8_lstm.build
    onnx.save(build(model), str(dst))


# name -> (quantizer, what meta.json records as the method, whether rows of a batch are computed independently)
METHODS: dict[str, tuple[Quantizer, str, bool]] = {
    "static": (static_int8, "int8 MatMulIntegerToFloat cell, per-channel 7-bit weights, fixed activation scale "
                            "(training/int8_graph.py)", True),
    "dynamic": (dynamic_int8, "onnxruntime quantize_dynamic, QInt8 weights", False),
}


def default_method(meta: Meta) -> str:
    """static where it applies (LSTM and GRU char LMs, LSTM classifiers: rows stay batch-independent), else dynamic."""
    static = (meta.kind == "char_lm" and meta.cell in ("lstm", "gru")) or (meta.kind == "classifier" and meta.cell == "lstm")
    return "static" if static else "dynamic"


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0


def _zero(meta: Meta, batch: int) -> dict[str, np.ndarray]:
    return {s.input: np.zeros((s.n_layer, batch, s.hidden_size), np.float32) for s in meta.state}


def _step(sess: ort.InferenceSession, meta: Meta, tokens: np.ndarray, state: dict) -> tuple[np.ndarray, dict]:
    logits, *new = sess.run(None, {artifact.TOKENS: tokens, **state})
    return logits, {s.input: v for s, v in zip(meta.state, new, strict=True)}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _sample(logits: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws from softmax(logits) (B, V) with uniforms u (B,)."""
    cdf = np.cumsum(_softmax(logits), axis=1)
    return np.minimum((cdf < u[:, None]).sum(axis=1), logits.shape[1] - 1)


def _write(sess: ort.InferenceSession, meta: Meta, first: np.ndarray, seeds: list[int]) -> np.ndarray:
    """Each row writes SAMPLED_CHARS characters from its first token, drawing from its own seeded generator."""
    rngs = [np.random.default_rng(s) for s in seeds]
    tokens, state, out = first[:, None], _zero(meta, len(seeds)), []
    for _ in range(SAMPLED_CHARS):
        logits, state = _step(sess, meta, tokens, state)
        tokens = _sample(logits[:, -1], np.array([r.random() for r in rngs]))[:, None]
        out.append(tokens[:, 0])
    return np.stack(out, axis=1)  # (B, SAMPLED_CHARS)


def verify_lm(sess: ort.InferenceSession, meta: Meta, seed: int = 0) -> dict[str, Any]:
    """Prefill == steps (probabilities within QUANT_PROB_TOL); whether seeded streams write the same text alone and batched.

    The second is recorded, not required: a per-tensor activation scale couples the rows of a batch, so a
    seeded stream's text follows fp32's alone-or-batched identity only until a near-tie draw flips
    (~50-180 characters on the bundled LSTM). Reproducible seeded text needs the fp32 version.
    """
    rng, V, T = np.random.default_rng(seed), int(meta.sizes["vocab_size"]), 17
    tokens = rng.integers(0, V, (2, T))
    prefill, _ = _step(sess, meta, tokens, _zero(meta, 2))
    state, steps = _zero(meta, 2), []
    for t in range(T):
        logits, state = _step(sess, meta, tokens[:, t : t + 1], state)
        steps.append(logits)
    step_diff = _max_diff(_softmax(prefill), _softmax(np.concatenate(steps, axis=1)))
    if step_diff >= QUANT_PROB_TOL:
        raise QuantizationError(f"prefill of {T} characters differs from {T} single steps by {step_diff:.3g} "
                                f"in probability (limit {QUANT_PROB_TOL})")
    first, seeds = rng.integers(0, V, 3), [seed + 1, seed + 2, seed + 3]
    batched = _write(sess, meta, first, seeds)
    alone = np.concatenate([_write(sess, meta, first[i : i + 1], seeds[i : i + 1]) for i in range(3)])
    same = [int(np.argmax(b != a)) if (b != a).any() else SAMPLED_CHARS for b, a in zip(batched, alone, strict=True)]
    return {"prefill_vs_steps_max_prob_diff": step_diff, "seeded_text_same_alone_and_batched": min(same) == SAMPLED_CHARS,
            "seeded_chars_equal_before_first_difference": same}


def verify_classifier(sess: ort.InferenceSession, meta: Meta, pad_id: int, seed: int = 0) -> dict[str, Any]:
    """A row padded among longer rows gives (within QUANT_PROB_TOL) the probabilities and the label it gets alone."""
    rng, V = np.random.default_rng(seed), int(meta.sizes["vocab_size"])
    lengths = np.array([23, 4, 11])
    batch = np.full((3, 23), pad_id, np.int64)
    for i, n in enumerate(lengths):
        batch[i, :n] = rng.integers(0, V, n)
    padded = sess.run([artifact.LOGITS], {artifact.TOKENS: batch, artifact.LENGTHS: lengths})[0]
    alone = np.concatenate([sess.run([artifact.LOGITS], {artifact.TOKENS: batch[i : i + 1, :n],
                                                         artifact.LENGTHS: lengths[i : i + 1]})[0]
                            for i, n in enumerate(lengths)])
    diff = _max_diff(_softmax(padded), _softmax(alone))
    if diff >= QUANT_PROB_TOL or (padded.argmax(1) != alone.argmax(1)).any():
        raise QuantizationError(f"rows padded inside a batch differ from the rows alone by {diff:.3g} in probability "
                                f"(limit {QUANT_PROB_TOL}) or change label")
    return {"padded_vs_alone_max_prob_diff": diff}


def _quality(fp32: ort.InferenceSession, int8: ort.InferenceSession, meta: Meta, tok: Tokenizer,
             root: Path) -> dict[str, Any]:
    """Both graphs on the validation data; QuantizationError with both figures if int8 falls outside the gate."""
    if meta.kind == "char_lm":
        ids = ort_eval.lm_val_ids(meta, tok, root)
        before, after = ort_eval.lm_loss(fp32, meta, ids), ort_eval.lm_loss(int8, meta, ids)
        figures = {"metric": "val_loss", "val_chars": len(ids), "fp32": before, "int8": after,
                   "limit": f"+{LM_LOSS_GATE} nats/char"}
        passed = after - before <= LM_LOSS_GATE
    else:
        rows, labels = ort_eval.classifier_val(meta, tok, root)
        assert tok.pad_id is not None, "a classifier's tokenizer has a pad id (checked at load)"
        before = ort_eval.classifier_accuracy(fp32, rows, labels, tok.pad_id)
        after = ort_eval.classifier_accuracy(int8, rows, labels, tok.pad_id)
        figures = {"metric": "val_accuracy", "val_examples": len(rows), "fp32": before, "int8": after,
                   "limit": f"-{ACCURACY_GATE}"}
        passed = before - after <= ACCURACY_GATE
    if not passed:
        raise QuantizationError(f"quality gate failed: {figures['metric']} fp32 {before:.4f}, int8 {after:.4f} "
                                f"(limit {figures['limit']}); nothing written")
    return figures


def _speed(sess: ort.InferenceSession, meta: Meta, pad_id: int | None, calls: int = 50) -> dict[str, float]:
    """Calls per second, one thread, brief: decode steps at B1/B64 (char LM) or a 64-row batch of 20 tokens."""
    if meta.kind == "char_lm":
        feeds = {f"b{b}_chars_per_s": (b, {artifact.TOKENS: np.zeros((b, 1), np.int64), **_zero(meta, b)})
                 for b in (1, 64)}
    else:
        feeds = {"b64_sentences_per_s": (64, {artifact.TOKENS: np.full((64, 20), pad_id or 0, np.int64),
                                              artifact.LENGTHS: np.full(64, 20, np.int64)})}
    out = {}
    for key, (rows, feed) in feeds.items():
        sess.run(None, feed)
        t0 = time.perf_counter()
        for _ in range(calls):
            sess.run(None, feed)
        out[key] = round(rows * calls / (time.perf_counter() - t0), 1)
    return out


def quantize_artifact(src_dir: str | Path, out_dir: str | Path, method: str | None = None,
                      data_root: str | Path = ".", quantizer: Quantizer | None = None) -> Meta:
    """Quantize src_dir's graph into out_dir (a new version directory), verified and gated, or raise saying why.

    method: a METHODS name (None: default_method). quantizer replaces the method's own graph writer (tests
    damage a graph that way) while keeping the method's checks. data_root is what meta.json's relative data
    paths are relative to (the repository root).
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    meta = Meta.load(src_dir / artifact.META_FILE)
    tok = Tokenizer.load(src_dir / artifact.TOKENIZER_FILE)
    if meta.precision != "fp32":
        raise ValueError(f"{src_dir} is already {meta.precision}; quantize an fp32 artifact")
    method = method or default_method(meta)
    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}; one of {sorted(METHODS)}")
    write, description, rows_independent = METHODS[method]
    if (out_dir / artifact.MODEL_FILE).exists():
        raise FileExistsError(f"{out_dir} already holds a model; quantize into a new version directory")
    with tempfile.TemporaryDirectory() as tmp:
        q_path = Path(tmp) / artifact.MODEL_FILE
        (quantizer or write)(src_dir / artifact.MODEL_FILE, q_path)
        fp32, int8 = make_session(src_dir / artifact.MODEL_FILE, 1, 1), make_session(q_path, 1, 1)
        if meta.kind == "char_lm":
            checks = verify_lm(int8, meta)
            if rows_independent and not (checks["seeded_text_same_alone_and_batched"]
                                         and checks["prefill_vs_steps_max_prob_diff"] == 0):
                raise QuantizationError(f"a {method} graph must give prefill == steps exactly and the same seeded "
                                        f"text alone and batched; it did not: {checks}")
        else:
            assert tok.pad_id is not None, "a classifier's tokenizer has a pad id (checked at load)"
            checks = verify_classifier(int8, meta, tok.pad_id)
            if rows_independent and checks["padded_vs_alone_max_prob_diff"] > ROW_TOL:
                raise QuantizationError(f"a {method} graph must give each row what it gives alone (within {ROW_TOL}); "
                                        f"it did not: {checks}")
        quality = _quality(fp32, int8, meta, tok, Path(data_root))
        meta.precision = "int8"
        meta.evaluation = {**meta.evaluation, "quantization": {
            "method": method, "from_version": src_dir.name, "graph": description, "checks": checks, "gate": quality,
            "speed_1_thread": {"fp32": _speed(fp32, meta, tok.pad_id), "int8": _speed(int8, meta, tok.pad_id)}}}
        if meta.kind == "char_lm":  # what the repository reads to choose the version served by default
            meta.evaluation["quantization"]["seeded_text_batch_independent"] = checks["seeded_text_same_alone_and_batched"]
        meta.versions = {**meta.versions, "onnxruntime": ort.__version__}
        # The fp32 graph's timings describe another graph: only its thread count stays, as the default until the
        # int8 graph's own are measured (bench.int8_step) and recorded.
        meta.runtime = {k: v for k, v in meta.runtime.items() if k == "intra_op_num_threads"}
        meta.description = f"int8 of version {src_dir.name}: {meta.description}".strip(": ")
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(src_dir / artifact.TOKENIZER_FILE, Path(tmp) / artifact.TOKENIZER_FILE)
        meta.save(Path(tmp) / artifact.META_FILE)
        for name in (artifact.TOKENIZER_FILE, artifact.META_FILE, artifact.MODEL_FILE):  # model.onnx last: complete
            shutil.move(str(Path(tmp) / name), out_dir / name)
    return meta
