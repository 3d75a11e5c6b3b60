"""A translation's alignment as a picture: a grid of source tokens (columns) by output tokens (rows), each cell as
dark as the attention the output token paid to the source token. Bahdanau, Cho & Bengio (2015), "Neural Machine
Translation by Jointly Learning to Align and Translate", fig. 3.

The HTML page (standard library only, in the style of the cells page) and a PNG (matplotlib, imported only when
a PNG is asked for).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from service.interpret.cellpage import colour

WORD_START = "\u2581"  # how SentencePiece-style subwords mark the start of a word


def labels(tokens: Sequence[str]) -> list[str]:
    """Tokens as a reader wants them: with subwords that mark word starts, the mark dropped and the pieces that
    continue a word prefixed with "·"; special tokens ("</s>") and word-level tokens as they are."""
    if not any(t.startswith(WORD_START) for t in tokens):
        return list(tokens)
    return [t[1:] if t.startswith(WORD_START) else t if t.startswith("<") and t.endswith(">") else "·" + t
            for t in tokens]


def _check(source: Sequence[str], target: Sequence[str], weights: Sequence[float]) -> None:
    if not source or not target:
        raise ValueError("an alignment needs source and target tokens")
    if len(weights) != len(source) * len(target):
        raise ValueError(f"{len(weights)} weights for {len(target)} x {len(source)} tokens")


_STYLE = """body{font-family:sans-serif;margin:16px;color:#222}
table{border-collapse:collapse;font-family:monospace;font-size:14px}
th{font-weight:normal;padding:2px 6px;white-space:nowrap}
thead th{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left;vertical-align:bottom}
tbody th{text-align:right}
td{width:26px;height:22px;border:1px solid #eee}
.bar{display:inline-block;width:220px;height:12px;vertical-align:middle;background:linear-gradient(90deg,#fff,rgb(178,24,43))}"""


def render(title: str, source: Sequence[str], target: Sequence[str], weights: Sequence[float], note: str = "") -> str:
    """The page as one string: `weights` row-major, weights[i * len(source) + j] from target i to source j."""
    _check(source, target, weights)
    S = len(source)
    head = "".join(f"<th>{html.escape(s)}</th>" for s in labels(source))
    rows = []
    for i, t in enumerate(labels(target)):
        cells = "".join(
            f'<td style="background:{colour(w, -1.0, 1.0)}" title="{html.escape(f"{t} ← {s}: {w:.3f}")}"></td>'
            for s, w in zip(labels(source), weights[i * S : (i + 1) * S], strict=True))
        rows.append(f"<tr><th>{html.escape(t)}</th>{cells}</tr>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body><h1 style="font-size:20px">{html.escape(title)}</h1><p>{html.escape(note)}</p>
<p>0 <span class="bar"></span> 1 &nbsp; <small>hover a cell: the attention of an output token (row) on a source
token (column)</small></p>
<table><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>
</body></html>
"""


def write_png(path: Path, title: str, source: Sequence[str], target: Sequence[str], weights: Sequence[float]) -> None:
    """The same grid as a PNG heatmap with its tokens on the axes (needs matplotlib)."""
    _check(source, target, weights)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.asarray(weights, np.float32).reshape(len(target), len(source))
    fig, ax = plt.subplots(figsize=(1.5 + 0.35 * len(source), 1.2 + 0.3 * len(target)))
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0)  # Bahdanau et al.'s fig. 3: white is attention
    ax.set_xticks(range(len(source)), labels(source), rotation=90)
    ax.set_yticks(range(len(target)), labels(target))
    ax.xaxis.tick_top()
    ax.set_title(title, fontsize=9, pad=12)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
