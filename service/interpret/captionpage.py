"""A caption's attention as a picture: the image once per word, lit where the model looked when it chose that word.
Xu et al. (2015), "Show, Attend and Tell", fig. 2 and 3 (soft attention).

Each word's weights over the rows x cols feature grid are upsampled smoothly (bicubic) to the image's size, scaled
to their maximum, and the image is darkened where they are low. A PNG (Pillow: every panel with its word under
it) and an HTML page in the style of the cells and alignment pages (standard library only, the panels inlined).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

PANEL = 224  # the longer side of each panel, in pixels
FLOOR = 0.2  # brightness left where a word paid no attention (0 would hide the picture)
PER_ROW = 5
LABEL_H = 22


def _check(words: Sequence[str], weights: Sequence[float], rows: int, cols: int) -> np.ndarray:
    if not words:
        raise ValueError("a caption's attention needs at least one word")
    if rows < 1 or cols < 1 or len(weights) != len(words) * rows * cols:
        raise ValueError(f"{len(weights)} weights for {len(words)} words over a {rows} x {cols} grid")
    return np.asarray(weights, np.float32).reshape(len(words), rows, cols)


def _fit(img: Image.Image) -> Image.Image:
    scale = PANEL / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BICUBIC)


def panels(img: Image.Image, words: Sequence[str], weights: Sequence[float], rows: int, cols: int) -> list[Image.Image]:
    """One RGB panel per word: the image (its longer side PANEL pixels) lit by that word's attention."""
    grids = _check(words, weights, rows, cols)
    base = _fit(img.convert("RGB"))
    pixels = np.asarray(base, np.float32)
    out = []
    for grid in grids:
        # The grid covers the whole image (the encoder sees it resized, aspect ratio not kept): stretch it to fit.
        smooth = np.asarray(Image.fromarray(grid, "F").resize(base.size, Image.Resampling.BICUBIC), np.float32)
        light = FLOOR + (1 - FLOOR) * np.clip(smooth / max(float(smooth.max()), 1e-9), 0, 1)
        out.append(Image.fromarray((pixels * light[..., None]).clip(0, 255).astype(np.uint8), "RGB"))
    return out


def png(img: Image.Image, words: Sequence[str], weights: Sequence[float], rows: int, cols: int) -> bytes:
    """The panels in rows of PER_ROW, each word written under its panel, as PNG bytes."""
    tiles = panels(img, words, weights, rows, cols)
    w, h = tiles[0].size
    n_rows = -(-len(tiles) // PER_ROW)
    sheet = Image.new("RGB", (min(len(tiles), PER_ROW) * (w + 4), n_rows * (h + LABEL_H + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (tile, word) in enumerate(zip(tiles, words, strict=True)):
        x, y = (i % PER_ROW) * (w + 4), (i // PER_ROW) * (h + LABEL_H + 4)
        sheet.paste(tile, (x, y))
        draw.text((x + 4, y + h + 4), word, fill=(20, 20, 20))
    out = io.BytesIO()
    sheet.save(out, "PNG")
    return out.getvalue()


_STYLE = """body{font-family:sans-serif;margin:16px;color:#222}
.caption{font-size:18px;margin:8px 0 16px}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;text-align:center}
figcaption{font-family:monospace;font-size:15px;padding-top:3px}
img{display:block;border:1px solid #ddd}"""


def _data_uri(img: Image.Image) -> str:
    out = io.BytesIO()
    img.save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def render(title: str, img: Image.Image, words: Sequence[str], weights: Sequence[float], rows: int, cols: int,
           note: str = "") -> str:
    """The page as one string: the image, the caption, then one lit panel per word (self-contained: no links)."""
    tiles = panels(img, words, weights, rows, cols)
    figures = "".join(
        f'<figure><img src="{_data_uri(t)}" alt="{html.escape(w)}" width="{t.width}" height="{t.height}">'
        f"<figcaption>{html.escape(w)}</figcaption></figure>" for t, w in zip(tiles, words, strict=True))
    caption = " ".join(w for w in words if not (w.startswith("<") and w.endswith(">")))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body><h1 style="font-size:20px">{html.escape(title)}</h1><p>{html.escape(note)}</p>
<div class="caption">{html.escape(caption)}</div>
<div class="grid"><figure><img src="{_data_uri(_fit(img.convert("RGB")))}" alt="the image"><figcaption>(image)</figcaption>
</figure>{figures}</div>
</body></html>
"""
