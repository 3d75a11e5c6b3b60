"""Pictures of cells (matplotlib, PNG): text coloured by one unit, as in Karpathy et al. (2015) figs. 3-6,
and the gate saturation scatter of their fig. 4."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

CMAP = "RdBu_r"  # blue low, white middle, red high: the HTML page's colours


def _grid(chars: list[str], width: int, max_rows: int) -> list[list[tuple[int, str]]]:
    """Rows of (index, char): a newline ends its row (drawn as a narrow mark), long lines wrap at width."""
    rows: list[list[tuple[int, str]]] = [[]]
    for i, ch in enumerate(chars):
        if len(rows[-1]) == width:
            rows.append([])
        rows[-1].append((i, "↵" if ch == "\n" else ch))
        if ch == "\n":
            rows.append([])
        if len(rows) > max_rows:
            rows.pop()
            break
    return rows


def text_heatmap(chars: list[str], values: np.ndarray, lo: float, hi: float, path: str | Path, title: str,
                 width: int = 90, max_rows: int = 32) -> None:
    """Each character on a cell coloured by the unit's value after reading it."""
    rows = _grid(chars, width, max_rows)
    grid = np.full((len(rows), width), np.nan)
    for r, row in enumerate(rows):
        for c, (i, _) in enumerate(row):
            grid[r, c] = values[i]
    fig, ax = plt.subplots(figsize=(width * 0.08 + 0.3, len(rows) * 0.17 + 0.5))
    cmap = plt.get_cmap(CMAP).with_extremes(bad="white")
    ax.imshow(grid, cmap=cmap, vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
    for r, row in enumerate(rows):
        for c, (i, ch) in enumerate(row):
            if not ch.isspace():
                dark = abs(2 * values[i] - lo - hi) > 0.6 * (hi - lo)  # white on the deepest colours
                ax.text(c, r, ch, ha="center", va="center", fontsize=8, family="monospace",
                        color="#999" if ch == "↵" else "white" if dark else "black")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9, loc="left")
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gate_saturation(stats: dict, path: str | Path, title: str) -> None:
    """One panel per gate: each unit's fraction of time left-saturated (x) vs right-saturated (y), one colour per layer."""
    gates = list(stats)
    fig, axes = plt.subplots(1, len(gates), figsize=(3.3 * len(gates), 3.4), squeeze=False)
    for ax, g in zip(axes[0], gates, strict=True):
        for s in stats[g]:
            ax.scatter(s["left"], s["right"], s=6, alpha=0.5, label=f"layer {s['layer']}")
        ax.plot([0, 1], [1, 0], color="#bbb", lw=0.8)  # left + right <= 1
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("fraction < 0.1 (left-saturated)", fontsize=8)
        ax.set_ylabel("fraction > 0.9 (right-saturated)", fontsize=8)
        ax.set_title(g.replace("_", " "), fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, markerscale=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
