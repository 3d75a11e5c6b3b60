"""The gradient experiments' figures (PNG) and tables (Markdown), from the results dict of training/gradient_report.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

CELL_COLOURS = {"rnn": "C0", "lstm": "C1", "gru": "C2"}
CLIP_NAMES = {"none": "no clipping", "norm": "global norm ≤ 1", "value": "min-char-rnn per-entry clip"}
JACOBIAN = {"sigma_max": "σ_max(W_hh)", "spectral_radius": "ρ(W_hh)", "mean_tanh_prime": "mean tanh′",
            "rms_tanh_prime": "RMS tanh′", "mean_bound": "mean tanh′ · σ_max", "estimate": "ρ · RMS tanh′",
            "max_bound": "bound: geo-mean of max tanh′ · σ_max"}
DPI = 80  # small PNGs: the page shows them at about 700-1000 px wide


def _smooth(x: list[float], width: int = 10) -> np.ndarray:
    width = max(1, min(width, len(x)))
    return np.convolve(np.asarray(x), np.ones(width) / width, mode="valid")


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def distance_figure(d: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for cell, colour in CELL_COLOURS.items():
        for phase, style in (("init", "--"), ("trained", "-")):
            row = d[f"{cell}-{phase}"]
            ax.semilogy(row["curve"], style, color=colour, label=f"{cell} {phase} (×{row['per_step_factor']:.3f}/step)")
    ref = np.asarray(d["minchar"]["curve"])
    k = np.arange(0, len(ref), max(1, len(ref) // 20))
    ax.semilogy(k, ref[k], "k.", label="rnn trained, NumPy min-char-rnn")
    ax.set_xlabel("k (characters back)")
    ax.set_ylabel("mean ‖∂L_t / ∂s_{t−k}‖")
    ax.set_title("Gradient of the loss at t with respect to the state k steps earlier")
    ax.legend(fontsize=8)
    _save(fig, path)


def scaled_figure(s: dict[str, Any], sigmas: list[float], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for i, sigma in enumerate(sigmas):
        colour = f"C{i}"
        init, trained = s[f"rescaled-{sigma}-init"], s[f"rescaled-{sigma}-trained"]
        axes[0].semilogy(init["curve"], "-", color=colour, label=f"σ_max {sigma} at init")
        axes[0].semilogy(trained["curve"], ":", color=colour,
                         label=f"σ_max {sigma}, trained (now {trained['jacobian']['sigma_max']:.2f})")
        ortho = s[f"orthogonal-{sigma}-init"]
        curve = np.asarray(ortho["curve"])
        axes[1].semilogy(curve, "-", color=colour, label=f"{sigma}·Q with tanh")
        linear = curve[0] * sigma ** np.arange(len(curve))
        axes[1].semilogy(np.where(linear > 1e-250, linear, np.nan), ":", color=colour, label=f"{sigma}^k (no tanh)")
        axes[2].plot(_smooth(trained["losses"]), color=colour, label=f"σ_max {sigma} at init")
    axes[0].set_title("torch's init rescaled to σ_max(W_hh) = σ")
    axes[1].set_title("W_hh = σ·Q, Q orthogonal (every singular value σ)")
    measured = np.concatenate([s[f"orthogonal-{sigma}-init"]["curve"] for sigma in sigmas])
    measured = measured[measured > 1e-250]
    axes[1].set_ylim(measured.min() / 10, measured.max() * 10)  # the no-tanh lines run off far beyond what was measured
    axes[2].set_title("training loss, rescaled runs (10-step mean)")
    for ax in axes[:2]:
        ax.set_xlabel("k (characters back)")
        ax.set_ylabel("mean ‖∂L_t / ∂h_{t−k}‖")
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("nats/char")
    for ax in axes:
        ax.legend(fontsize=7)
    _save(fig, path)


def _start(name: str) -> str:
    return "torch's init" if name == "recipe" else f"W_hh = {name.split('-')[1]}·Q"


def clipping_figure(c: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(len(c), 2, figsize=(13, 4 * len(c)), squeeze=False)
    for (start, runs), (norm_ax, loss_ax) in zip(c.items(), axes, strict=True):
        for i, (how, run) in enumerate(runs.items()):
            norm_ax.semilogy(run["grad_norms"], color=f"C{i}", lw=0.8,
                             label=f"{CLIP_NAMES[how]} ({run['spikes_10x']} steps > 10× median)")
            loss_ax.plot(_smooth(run["losses"]), color=f"C{i}", label=f"{CLIP_NAMES[how]} (val {run['val_loss']:.3f})")
        norm_ax.axhline(10 * runs["none"]["median_norm"], color="grey", ls=":", label="10× the unclipped median")
        norm_ax.set_title(f"{_start(start)}: global gradient norm before clipping")
        loss_ax.set_title(f"{_start(start)}: training loss (10-step mean)")
        loss_ax.set_ylabel("nats/char")
        for ax in (norm_ax, loss_ax):
            ax.set_xlabel("step")
            ax.legend(fontsize=8)
    _save(fig, path)


def context_figure(ctx: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ks = np.asarray(ctx["contexts"])
    for i, row in enumerate(ctx["rows"]):
        mean, se = np.asarray(row["cost"]), np.asarray(row["se"])
        shown = np.maximum(mean, 1e-4)
        ax.errorbar(ks * (1 + 0.03 * i), shown, yerr=se, color=f"C{i}", lw=1, capsize=2, label=row["model"])
        significant = mean > 3 * se
        ax.plot(ks[significant] * (1 + 0.03 * i), shown[significant], "o", color=f"C{i}")
        ax.plot(ks[~significant] * (1 + 0.03 * i), shown[~significant], "o", mfc="none", color=f"C{i}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("k: characters of context given")
    ax.set_ylabel(f"loss − loss with {ctx['full_context']} (nats/char)")
    ax.set_title("What cutting the context costs (filled: more than 3 standard errors)")
    ax.legend(fontsize=8)
    _save(fig, path)


def figures(results: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png" for name in ("distance", "scaled", "clipping", "context")]
    distance_figure(results["distance"], paths[0])
    scaled_figure(results["scaled"], sorted({v["sigma"] for v in results["scaled"].values()}), paths[1])
    clipping_figure(results["clipping"], paths[2])
    context_figure(results["context"], paths[3])
    return paths


def _g(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """Markdown table lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(x) for x in row) + " |" for row in rows), ""]


def distance_tables(d: dict[str, Any], K: int) -> list[str]:
    ks = [k for k in (0, 10, 50, 100, K) if k <= K]
    rows = []
    for cell in CELL_COLOURS:
        for phase in ("init", "trained"):
            r = d[f"{cell}-{phase}"]
            reach = r["reach_1e-3"] if r["reach_1e-3"] is not None else f"> {K}"
            rows.append([cell, phase, f"{r['val_loss']:.3f}", *(_g(r["curve"][k]) for k in ks),
                         f"{r['per_step_factor']:.4f}", reach])
    lines = ["### 1. Gradient norm vs distance", "",
             *_table(["cell", "weights", "val loss", *(f"k={k}" for k in ks), "per-step factor (k ≥ 5)", "falls 1000× by k"],
                     rows)]
    rows = []
    for phase in ("init", "trained"):
        j = d[f"rnn-{phase}"]["jacobian"]
        rows.append([phase, *(f"{j[key]:.3f}" for key in JACOBIAN), f"{d[f'rnn-{phase}']['per_step_factor']:.4f}"])
    lines += _table(["vanilla rnn", *JACOBIAN.values(), "measured per-step factor"], rows)
    return [*lines, "NumPy min-char-rnn on the trained rnn's weights and the same windows: largest relative difference "
            f"from the torch curve {d['minchar']['max_rel_diff']:.1e}.", ""]


def scaled_table(s: dict[str, Any]) -> list[str]:
    rows = []
    for key, r in s.items():
        if r["phase"] != "init":
            continue
        j, curve, trained = r["jacobian"], r["curve"], s.get(key.replace("-init", "-trained"))
        after = ["—"] * 5
        if trained:
            t = trained["jacobian"]
            after = [f"{t['sigma_max']:.3f}", f"{t['spectral_radius']:.3f}", f"{trained['per_step_factor']:.4f}",
                     f"{trained['clipped_steps']} of {len(trained['losses'])}", f"{trained['val_loss']:.3f}"]
        rows.append([r["family"], r["sigma"], *(f"{j[key]:.3f}" for key in ("spectral_radius", "mean_tanh_prime",
                                                                            "rms_tanh_prime", "mean_bound", "estimate")),
                     f"{r['per_step_factor']:.4f}", _g(curve[min(50, len(curve) - 1)] / curve[0]), *after])
    return ["### 2. Scaled W_hh", "",
            *_table(["W_hh", "σ", "ρ(W_hh)", "mean tanh′", "RMS tanh′", "mean tanh′ · σ", "ρ · RMS tanh′", "per-step factor",
                     "‖g‖ at k=50 / k=0", "trained: σ_max", "ρ", "per-step factor", "steps clipped", "val loss"], rows)]


def clipping_table(c: dict[str, Any]) -> list[str]:
    rows = [[_start(start), CLIP_NAMES[how], f"{r['median_norm']:.3g}", f"{r['max_norm']:.3g}",
             f"{r['median_head_norm']:.3g}", r["spikes_10x"], f"{r['clipped_steps']} of {len(r['grad_norms'])}",
             f"{r['final_train_loss']:.3f}", f"{r['val_loss']:.3f}"]
            for start, runs in c.items() for how, r in runs.items()]
    return ["### 3. Clipping", "",
            *_table(["start", "run", "median ‖g‖", "max ‖g‖", "median ‖g‖ of the output layer", "steps > 10× median",
                     "steps the clip changed", "final train loss", "val loss"], rows)]


def context_table(ctx: dict[str, Any]) -> list[str]:
    rows = [[r["model"], f"{r['full_loss']:.3f}", *(f"{m:+.3f} ± {e:.3f}" for m, e in zip(r["cost"], r["se"], strict=True)),
             r["longest_used"] if r["longest_used"] is not None else "—"] for r in ctx["rows"]]
    return ["### 4. Context", "",
            f"Loss increase (nats/char) when the model reads only the last k characters instead of {ctx['full_context']}, "
            "mean ± standard error over the scored positions:", "",
            *_table(["model", "loss with full context", *(f"k={k}" for k in ctx["contexts"]), "uses more than"], rows)]


def tables(results: dict[str, Any]) -> str:
    """Every table of docs/gradients.md, in Markdown."""
    return "\n".join([*distance_tables(results["distance"], results["plan"]["distance"]), *scaled_table(results["scaled"]),
                      *clipping_table(results["clipping"]), *context_table(results["context"])])
