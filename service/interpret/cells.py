"""Cell search: score every unit of a char LM artifact against feature detectors, sentiment, and gate saturation.

Karpathy, Johnson & Fei-Fei (2015) found LSTM cells that track quotes, line length and nesting by
looking; here every unit is scored against each detector of features.py, by Pearson
correlation and, for binary features, by ROC AUC (how well thresholding the unit alone separates
the two classes). Radford, Jozefowicz & Sutskever (2017) found one unit of a char LM whose value
at the end of a review predicts its sentiment: score_sentiment is that test. Activations come from
the served artifact itself (trace.py), so what is found here is what Trace shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.artifact import META_FILE, MODEL_FILE, TOKENIZER_FILE, Meta
from service.artifact.session import make_session
from service.artifact.tokenizer import Tokenizer
from service.interpret import features
from service.interpret.trace import GATES, Tracer
from service.models.runners import LMRunner

SATURATED_LOW, SATURATED_HIGH = 0.1, 0.9  # the paper's gate saturation thresholds
MIN_CLASS = 20  # a binary feature needs this many characters of each class to be scored


@dataclass
class Model:
    """An artifact opened for reading activations: tracer (numpy), runner (the served graph), tokenizer."""

    path: Path
    meta: Meta
    tokenizer: Tokenizer
    tracer: Tracer
    runner: LMRunner

    @classmethod
    def open(cls, path: str | Path) -> Model:
        path = Path(path)
        meta = Meta.load(path / META_FILE)
        if meta.kind != "char_lm":
            raise ValueError(f"{path} is a {meta.kind}; cell search reads a char_lm")
        runner = LMRunner(make_session(path / MODEL_FILE, 1, 1), meta)
        return cls(path, meta, Tokenizer.load(path / TOKENIZER_FILE), Tracer.load(path / MODEL_FILE), runner)

    @property
    def scored(self) -> tuple[str, ...]:
        """The quantities scored against features: the states (gates are summarised by saturation)."""
        return ("hidden", "cell") if self.tracer.cell == "lstm" else ("hidden",)


def read_corpus(text: str, tracer: Tracer, tok: Tokenizer, n_stream: int = 16, burn_in: int = 200
                ) -> tuple[str, dict[str, np.ndarray]]:
    """Activations over `text`, read as n_stream parallel contiguous pieces.

    Each piece starts burn_in characters early and those steps are dropped, so no scored character
    is read from a cold zero state. Returns the scored text and {quantity: (N, L, H)} float32.
    """
    m = (len(text) - burn_in) // n_stream
    if m < 1:
        raise ValueError(f"the corpus has {len(text)} characters; it needs more than {burn_in + n_stream}")
    ids = tok.encode(text[: burn_in + n_stream * m])
    rows = np.stack([ids[b * m : b * m + burn_in + m] for b in range(n_stream)])  # (B, burn_in + m)
    acts = tracer.run(rows)  # {q: (L, B, burn_in + m, H)}
    flat = {q: np.ascontiguousarray(a[:, :, burn_in:].transpose(1, 2, 0, 3).reshape(n_stream * m, a.shape[0], -1))
            for q, a in acts.items()}
    return text[burn_in : burn_in + n_stream * m], flat


def pearson(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Correlation of each column of X (N, U) with y (N,); 0 for a constant column."""
    Xc = X - X.mean(axis=0)
    yc = y - y.mean()
    den = np.sqrt((Xc * Xc).sum(axis=0) * (yc @ yc))
    return np.divide(Xc.T @ yc, den, out=np.zeros(X.shape[1]), where=den > 0)


def auc(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ROC AUC of each column of X (N, U) as a score for y (N,) bool: the Mann-Whitney U statistic,
    ties counted half (saturated units repeat values exactly). 1: the unit is higher on every positive."""
    n1 = int(y.sum())
    n0 = len(y) - n1
    out = np.empty(X.shape[1])
    for u in range(X.shape[1]):
        s = np.sort(X[:, u])
        col = X[y, u]
        rank = (np.searchsorted(s, col, "left") + np.searchsorted(s, col, "right") + 1) / 2  # 1-based average ranks
        out[u] = (rank.sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    return out


def columns(model: Model) -> list[tuple[str, int, int]]:
    """(quantity, layer, unit) of every scored column, in the order of stack_columns."""
    L, H = model.tracer.n_layer, model.tracer.hidden_size
    return [(q, layer, u) for q in model.scored for layer in range(L) for u in range(H)]


def stack_columns(model: Model, acts: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([acts[q].reshape(len(acts[q]), -1) for q in model.scored], axis=1)  # (N, U)


def score_features(model: Model, text: str, acts: dict[str, np.ndarray], names: list[str], top: int = 3) -> dict:
    """For each feature: class sizes and the `top` units, by AUC separation (binary) or |r| (scalar)."""
    X = stack_columns(model, acts).astype(np.float64)
    cols = columns(model)
    found, values = {}, features.compute(text, names)
    kinds = {f.name: f for f in features.FEATURES}
    for name in names:
        y = values[name]
        keep = ~np.isnan(y)
        Xk, yk = X[keep], y[keep]
        entry: dict = {"about": kinds[name].about, "binary": kinds[name].binary, "n": int(keep.sum())}
        if kinds[name].binary:
            n1 = int(yk.sum())
            entry["positives"] = n1
            if min(n1, len(yk) - n1) < MIN_CLASS:
                found[name] = {**entry, "skipped": f"fewer than {MIN_CLASS} characters in a class"}
                continue
            a = auc(Xk, yk > 0.5)
            key = np.abs(a - 0.5)
        elif np.std(yk) == 0:
            found[name] = {**entry, "skipped": "constant on this text"}
            continue
        r = pearson(Xk, yk)
        key = key if kinds[name].binary else np.abs(r)
        best = np.argsort(-key, kind="stable")[:top]
        entry["top"] = [{"quantity": cols[j][0], "layer": cols[j][1], "unit": cols[j][2], "r": round(float(r[j]), 4),
                         **({"auc": round(float(a[j]), 4)} if kinds[name].binary else {})} for j in best]
        found[name] = entry
    return found


def score_sentiment(model: Model, texts: list[str], labels: np.ndarray, top: int = 3) -> dict:
    """Radford et al. (2017): each unit's value after the last character of a text, as a score for label 1."""
    finals = []
    for text in texts:
        acts = model.tracer.run(model.tokenizer.encode(text)[None, :])
        finals.append(np.concatenate([acts[q][:, 0, -1].reshape(-1) for q in model.scored]))
    X, y = np.stack(finals).astype(np.float64), labels == 1
    a, r = auc(X, y), pearson(X, y.astype(np.float64))
    cols = columns(model)
    best = np.argsort(-np.abs(a - 0.5), kind="stable")[:top]
    return {"about": "label 1 vs 0, from the unit's value after the text's last character", "binary": True,
            "n": len(texts), "positives": int(y.sum()),
            "top": [{"quantity": cols[j][0], "layer": cols[j][1], "unit": cols[j][2], "auc": round(float(a[j]), 4),
                     "r": round(float(r[j]), 4)} for j in best]}


def gate_saturation(model: Model, acts: dict[str, np.ndarray]) -> dict:
    """Per gate and layer, each unit's fraction of steps left-saturated (< 0.1) and right-saturated (> 0.9) (paper fig. 3)."""
    out = {}
    for g in GATES[model.tracer.cell]:
        x = acts[g]  # (N, L, H)
        low, high = (x < SATURATED_LOW).mean(axis=0), (x > SATURATED_HIGH).mean(axis=0)  # (L, H)
        out[g] = [{"layer": layer, "mean_left": round(float(low[layer].mean()), 4),
                   "mean_right": round(float(high[layer].mean()), 4),
                   "units_right_half_the_time": int((high[layer] > 0.5).sum()),
                   "units_left_half_the_time": int((low[layer] > 0.5).sum()),
                   "left": np.round(low[layer], 4).tolist(), "right": np.round(high[layer], 4).tolist()}
                  for layer in range(x.shape[1])]
    return out


def table(found: dict) -> str:
    """The ranked table: one row per feature and listed unit."""
    lines = [f"{'feature':<14} {'n':>7} {'pos':>6}  {'rank':>4}  {'unit':<22} {'AUC':>6} {'r':>7}"]
    for name, e in found.items():
        if "skipped" in e:
            lines.append(f"{name:<14} {e['n']:>7} {e.get('positives', ''):>6}  skipped: {e['skipped']}")
            continue
        for k, t in enumerate(e["top"]):
            unit = f"layer {t['layer']} {t['quantity']} {t['unit']}"
            a = f"{t['auc']:.3f}" if "auc" in t else ""
            head = f"{name:<14} {e['n']:>7} {e.get('positives', ''):>6}" if k == 0 else " " * 29
            lines.append(f"{head}  {k + 1:>4}  {unit:<22} {a:>6} {t['r']:>+7.3f}")
    return "\n".join(lines)


def gate_table(stats: dict) -> str:
    lines = [f"{'gate':<12} {'layer':>5} {'left<0.1':>9} {'right>0.9':>10} {'units mostly left':>18} {'mostly right':>13}"]
    for g, layers in stats.items():
        for s in layers:
            lines.append(f"{g:<12} {s['layer']:>5} {s['mean_left']:>9.3f} {s['mean_right']:>10.3f} "
                         f"{s['units_left_half_the_time']:>18} {s['units_right_half_the_time']:>13}")
    return "\n".join(lines)


def search(model_dir: str | Path, out: str | Path, corpus: str | None = None, chars: int = 30000,
           names: list[str] | None = None, labels: str | None = None, max_sentences: int = 1000, show: int = 1200,
           top: int = 3) -> dict:
    """Score, print-ready report, cells.json, and one PNG + one HTML page of the best units, written under `out`."""
    import json

    from service.artifact.corpus import read_sentences, read_text
    from service.interpret import pictures
    from service.interpret.cellpage import Series, render, value_range
    from service.interpret.trace import trace_text

    model, out = Model.open(model_dir), Path(out)
    if corpus is None:  # the validation split of the corpus the model was trained on, as in the paper
        data = model.meta.training.get("config", {}).get("data", {})
        corpus, text = data.get("path", ""), read_text(data.get("path", ""))
        text = text[int(len(text) * (1 - data.get("val_fraction", 0.1))):]
    else:
        text = read_text(corpus)
    scored, acts = read_corpus(text[:chars], model.tracer, model.tokenizer)
    found = score_features(model, scored, acts, names or [f.name for f in features.FEATURES], top)
    if labels:
        s = read_sentences(labels, {"0": "negative", "1": "positive"})
        found["sentiment"] = score_sentiment(model, s.texts[:max_sentences], s.labels[:max_sentences], top)
    gates = gate_saturation(model, acts)
    report = {"model": str(model_dir), "cell": model.tracer.cell, "corpus": str(corpus), "chars": len(scored),
              "labels": labels, "features": found, "gates": gates}
    out.mkdir(parents=True, exist_ok=True)
    (out / "cells.json").write_text(json.dumps(report, indent=1) + "\n")
    name = model.path.parent.name
    if gates:
        pictures.gate_saturation(gates, out / "gates.png", f"{name}: gate saturation over {len(scored)} characters")

    best = [(f, e["top"][0]) for f, e in found.items() if "top" in e and f != "sentiment"]
    if best:
        excerpt = scored[:show]
        t = trace_text(model.tracer, model.runner, model.tokenizer, excerpt, [b["layer"] for _, b in best],
                       [b["unit"] for _, b in best], 5)
        series = []
        for j, (f, b) in enumerate(best):
            values = t.values[b["quantity"]][:, j]
            lo, hi = value_range(b["quantity"], values.tolist())
            score = f"AUC {b['auc']:.3f}" if "auc" in b else f"r {b['r']:+.3f}"
            label = f"{f}: layer {b['layer']} unit {b['unit']} {b['quantity']} ({score})"
            series.append(Series(label, values.tolist(), lo, hi))
            pictures.text_heatmap(t.chars, values, lo, hi, out / f"{f}.png", f"{name} · {label}")
        nxt = [[(model.tokenizer.token(int(i)), float(p)) for i, p in zip(ids, ps, strict=True)]
               for ids, ps in zip(t.top_ids, t.top_probs, strict=True)]
        page = render(f"{name}: the best unit for each feature", t.chars, series, nxt,
                      note=f"Scored on {len(scored)} characters of {corpus}; choose a feature's best unit below.")
        (out / "cells.html").write_text(page, encoding="utf-8")
    return report
