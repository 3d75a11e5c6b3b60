"""Export a checkpoint to the artifact directory (model.onnx, tokenizer.json, meta.json; a translator's
files come from training/export_translator.py).

The export verifies itself against torch and refuses to write an artifact that fails, so
everything under models/ is known to compute what the trained model computes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

import service.artifact as artifact
from service.artifact import Meta
from service.artifact.corpus import DataError
from service.artifact.tokenizer import Tokenizer
from training.baseline import baseline_of_run, margin
from training.checkpoint import config_of, load_checkpoint, model_of
from training.model import CharLM, Classifier
from training.onnx_warnings import batch_warning_unless_it_fails

OPSET = 17
PARITY_TOL = 1e-4  # ONNX Runtime vs torch, max abs difference
SELF_TOL = 1e-5  # prefill vs steps; padded vs alone


class ExportError(RuntimeError):
    """The exported graph does not compute what the torch model computes: nothing was written."""


def _session(path: Path, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _export_lm(model: CharLM, path: Path) -> list[artifact.StateSpec]:
    cfg = model.cfg
    specs = artifact.state_specs(cfg.cell, cfg.n_layer, cfg.hidden_size)
    tokens = torch.zeros(2, 5, dtype=torch.long)  # batch >= 2 so no exporter specialises B to 1
    state = model.init_state(2)
    axes: dict[str, dict[int, str]] = {artifact.TOKENS: {0: "batch", 1: "time"}, artifact.LOGITS: {0: "batch", 1: "time"}}
    for s in specs:
        axes[s.input] = {1: "batch"}
        axes[s.output] = {1: "batch"}
    torch.onnx.export(model, (tokens, *state), str(path), dynamo=False, opset_version=OPSET,
                      input_names=[artifact.TOKENS, *(s.input for s in specs)],
                      output_names=[artifact.LOGITS, *(s.output for s in specs)], dynamic_axes=axes)
    return specs


def _export_classifier(model: Classifier, path: Path) -> None:
    tokens = torch.ones(2, 5, dtype=torch.long)
    lengths = torch.tensor([5, 3])
    torch.onnx.export(model, (tokens, lengths), str(path), dynamo=False, opset_version=OPSET,
                      input_names=[artifact.TOKENS, artifact.LENGTHS], output_names=[artifact.LOGITS],
                      dynamic_axes={artifact.TOKENS: {0: "batch", 1: "time"}, artifact.LENGTHS: {0: "batch"},
                                    artifact.LOGITS: {0: "batch"}})


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def verify_lm(model: CharLM, sess: ort.InferenceSession, specs: list[artifact.StateSpec], seed: int = 0) -> dict[str, float]:
    """Torch vs ORT at B in {1, 3}, T in {1, 17}, random state; then prefill == T single steps."""
    g = torch.Generator().manual_seed(seed)
    V, L, H = model.cfg.vocab_size, model.cfg.n_layer, model.cfg.hidden_size
    worst = 0.0
    for B in (1, 3):
        for T in (1, 17):
            tokens = torch.randint(0, V, (B, T), generator=g)
            state = [0.5 * torch.randn(L, B, H, generator=g) for _ in specs]
            with torch.no_grad():
                want = [t.numpy() for t in model(tokens, *state)]
            feed = {artifact.TOKENS: tokens.numpy(), **{s.input: x.numpy() for s, x in zip(specs, state, strict=True)}}
            got = sess.run(None, feed)
            worst = max(worst, *(_max_diff(w, o) for w, o in zip(want, got, strict=True)))
    if worst >= PARITY_TOL:
        raise ExportError(f"ONNX Runtime differs from torch by {worst:.3g} (limit {PARITY_TOL})")

    T = 17
    tokens = np.random.default_rng(seed).integers(0, V, (2, T))
    zero = {s.input: np.zeros((L, 2, H), np.float32) for s in specs}
    prefill = sess.run(None, {artifact.TOKENS: tokens, **zero})
    state, step_logits = zero, []
    for t in range(T):
        out = sess.run(None, {artifact.TOKENS: tokens[:, t : t + 1], **state})
        step_logits.append(out[0])
        state = {s.input: x for s, x in zip(specs, out[1:], strict=True)}
    step_diff = max(_max_diff(prefill[0], np.concatenate(step_logits, axis=1)),
                    *(_max_diff(p, state[s.input]) for s, p in zip(specs, prefill[1:], strict=True)))
    if step_diff >= SELF_TOL:
        raise ExportError(f"prefill of {T} characters differs from {T} single steps by {step_diff:.3g} (limit {SELF_TOL})")
    return {"max_abs_diff_vs_torch": worst, "prefill_vs_steps_max_abs_diff": step_diff}


def verify_classifier(model: Classifier, sess: ort.InferenceSession, seed: int = 0) -> dict[str, float]:
    """Torch vs ORT on random padded batches; a row alone equals that row padded among longer rows."""
    g = torch.Generator().manual_seed(seed)
    V = model.cfg.vocab_size
    worst = 0.0
    for B in (1, 3):
        for T in (1, 17):
            tokens = torch.randint(1, V, (B, T), generator=g)
            lengths = torch.randint(1, T + 1, (B,), generator=g)
            with torch.no_grad():
                want = model(tokens, lengths).numpy()
            got = sess.run(None, {artifact.TOKENS: tokens.numpy(), artifact.LENGTHS: lengths.numpy()})[0]
            worst = max(worst, _max_diff(want, got))
    if worst >= PARITY_TOL:
        raise ExportError(f"ONNX Runtime differs from torch by {worst:.3g} (limit {PARITY_TOL})")

    rng = np.random.default_rng(seed)
    pad = model.cfg.pad_id
    short = rng.integers(1, V, 4)
    alone = sess.run(None, {artifact.TOKENS: short[None, :], artifact.LENGTHS: np.array([4])})[0]
    batch = np.full((3, 23), pad, dtype=np.int64)
    batch[0, :23] = rng.integers(1, V, 23)
    batch[1, :4] = short
    batch[2, :11] = rng.integers(1, V, 11)
    padded = sess.run(None, {artifact.TOKENS: batch, artifact.LENGTHS: np.array([23, 4, 11])})[0]
    pad_diff = _max_diff(alone[0], padded[1])
    if pad_diff >= SELF_TOL:
        raise ExportError(f"a row padded inside a batch differs from the row alone by {pad_diff:.3g} (limit {SELF_TOL})")
    return {"max_abs_diff_vs_torch": worst, "padded_vs_alone_max_abs_diff": pad_diff}


def best_threads(path: Path, feed: dict[str, np.ndarray], repeats: int = 300) -> dict[str, Any]:
    """Time one batch-1 call with 1 and 2 intra-op threads; the faster one becomes the serving default.

    Small models lose to thread hand-off overhead; wide ones gain (~2x at H >= 256 measured on an idle 2-core machine).
    """
    timings = {}
    for threads in (1, 2):
        sess = _session(path, threads)
        for _ in range(20):
            sess.run(None, feed)
        t0 = time.perf_counter()
        for _ in range(repeats):
            sess.run(None, feed)
        timings[str(threads)] = (time.perf_counter() - t0) / repeats * 1e6
    best = min(timings, key=timings.get)
    return {"intra_op_num_threads": int(best), "batch1_call_us_by_threads": {k: round(v, 1) for k, v in timings.items()}}


def _versions() -> dict[str, Any]:
    return {"torch": str(torch.__version__), "onnx": onnx.__version__, "onnxruntime": ort.__version__, "opset": OPSET}


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path, description: str = "") -> Meta:
    """Export, verify, and only then move the three files into out_dir (which must not hold a model yet)."""
    ckpt = load_checkpoint(ckpt_path)
    cfg = config_of(ckpt)
    out_dir = Path(out_dir)
    if cfg.task == "translation":
        from training.export_translator import export_translator

        return export_translator(ckpt, out_dir, description)
    if cfg.task == "captioning":
        from training.export_captioner import export_captioner

        return export_captioner(ckpt, out_dir, description)
    model, tok = model_of(ckpt)
    if (out_dir / artifact.MODEL_FILE).exists():
        raise FileExistsError(f"{out_dir} already holds a model; export to a new version directory")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / artifact.MODEL_FILE
        with batch_warning_unless_it_fails():  # the checks inside run batch 1 and 3
            if isinstance(model, CharLM):
                specs = _export_lm(model, onnx_path)
                sess = _session(onnx_path)
                checks = verify_lm(model, sess, specs)
                feed = {artifact.TOKENS: np.zeros((1, 1), np.int64),
                        **{s.input: np.zeros((s.n_layer, 1, s.hidden_size), np.float32) for s in specs}}
                labels: list[str] = []
            else:
                specs = []
                _export_classifier(model, onnx_path)
                checks = verify_classifier(model, _session(onnx_path))
                feed = {artifact.TOKENS: np.ones((1, 20), np.int64), artifact.LENGTHS: np.array([20])}
                labels = list(cfg.data.labels.values())
        onnx.checker.check_model(str(onnx_path))
        meta = Meta(
            kind=cfg.task,
            cell=model.cfg.cell,
            sizes=_sizes(model, tok),
            state=specs,
            labels=labels,
            training={"config": ckpt["config"], "step": ckpt["step"], "train_seconds": round(ckpt["elapsed_s"], 1),
                      "chars_or_examples_seen": ckpt.get("seen", 0)},
            data=ckpt["data"],
            evaluation={**ckpt.get("metrics", {}), **(_against_baseline(ckpt, tok) if isinstance(model, CharLM) else {}),
                        "export_checks": checks},
            versions=_versions(),
            runtime=best_threads(onnx_path, feed),
            description=description,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        Tokenizer.from_dict(ckpt["tokenizer"]).save(Path(tmp) / artifact.TOKENIZER_FILE)
        meta.save(Path(tmp) / artifact.META_FILE)
        # model.onnx moves last: its presence marks a complete artifact.
        for name in (artifact.TOKENIZER_FILE, artifact.META_FILE, artifact.MODEL_FILE):
            shutil.move(str(Path(tmp) / name), out_dir / name)
    return meta


def _against_baseline(ckpt: dict[str, Any], tok: Tokenizer) -> dict[str, Any]:
    """A char LM's Kneser-Ney baseline on its own split and the model's margin over it (positive: the model is better).

    Without the training corpus (moved, or changed since) the artifact is still written, without these figures.
    """
    try:
        base = baseline_of_run(ckpt["config"], tok, ckpt["data"])
    except DataError as err:
        warnings.warn(str(err), stacklevel=3)
        return {}
    val_loss = ckpt.get("metrics", {}).get("val_loss")
    return {"baseline": base, **({"margin_over_baseline": margin(val_loss, base)} if val_loss is not None else {})}


def _sizes(model: CharLM | Classifier, tok: Tokenizer) -> dict[str, Any]:
    c = model.cfg
    sizes = {"n_layer": c.n_layer, "n_embd": c.n_embd, "hidden_size": c.hidden_size, "vocab_size": tok.vocab_size,
             "n_params": sum(p.numel() for p in model.parameters())}
    if isinstance(model, Classifier):
        sizes.update(n_class=c.n_class, bidirectional=c.bidirectional)
    return sizes


def describe(meta: Meta) -> str:
    return json.dumps({"kind": meta.kind, "cell": meta.cell, "sizes": meta.sizes, "evaluation": meta.evaluation,
                       "runtime": meta.runtime}, indent=1)
