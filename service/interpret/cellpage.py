"""A self-contained HTML page: text coloured by a unit's activation, character by character, next-character top-k on hover.

The pictures of Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding Recurrent
Networks", figs. 3-6. Standard library only: the client CLI and the cell search both write it.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

NEGATIVE, POSITIVE = (33, 102, 172), (178, 24, 43)  # blue below the middle of the range, red above


@dataclass
class Series:
    """One unit's activation over the text; colours span lo (full blue) .. middle (white) .. hi (full red)."""

    label: str  # e.g. "layer 1 · unit 42 · cell"
    values: list[float]  # one per character
    lo: float
    hi: float


def value_range(quantity: str, values: list[float]) -> tuple[float, float]:
    """Gates live in (0, 1): their colours span that. A state spans its own minimum .. maximum over the text,
    so a unit that switches between -5 and +1 shows both sides (the page prints the range beside the colour bar)."""
    if quantity.endswith("_gate") or not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    return (lo, hi) if hi > lo else (lo - 1.0, hi + 1.0)


def colour(v: float, lo: float, hi: float) -> str:
    t = max(-1.0, min(1.0, (2 * v - lo - hi) / ((hi - lo) or 1.0)))  # -1 at lo, +1 at hi
    end = POSITIVE if t > 0 else NEGATIVE
    return "rgb({},{},{})".format(*(round(255 + abs(t) * (e - 255)) for e in end))


def _tip(v: float, nxt: list[tuple[str, float]] | None) -> str:
    shown = " ".join(f"{json.dumps(c)} {p:.2f}" for c, p in nxt) if nxt else ""
    return f"{v:+.3f}" + (f" | next: {shown}" if shown else "")


_STYLE = """body{font-family:sans-serif;margin:16px;color:#222}
#text{font-family:monospace;font-size:15px;line-height:1.55;white-space:pre-wrap;word-break:break-all;max-width:110ch}
#text span{border-radius:2px}
.bar{display:inline-block;width:220px;height:12px;vertical-align:middle;
background:linear-gradient(90deg,rgb(33,102,172),#fff,rgb(178,24,43))}"""

_SCRIPT = """const D=JSON.parse(document.getElementById('data').textContent);
const spans=document.querySelectorAll('#text span'), pick=document.getElementById('series');
function colour(v,lo,hi){let t=Math.max(-1,Math.min(1,(2*v-lo-hi)/((hi-lo)||1)));
const e=t>0?[178,24,43]:[33,102,172];return 'rgb('+e.map(x=>Math.round(255+Math.abs(t)*(x-255))).join(',')+')';}
function show(k){const s=D.series[k];document.getElementById('lo').textContent=s.lo.toFixed(2);
document.getElementById('hi').textContent=s.hi.toFixed(2);
spans.forEach((el,i)=>{const v=s.values[i];el.style.background=colour(v,s.lo,s.hi);
const n=D.next?' | next: '+D.next[i].map(p=>JSON.stringify(p[0])+' '+p[1].toFixed(2)).join(' '):'';
el.title=(v>=0?'+':'')+v.toFixed(3)+n;});}
pick.addEventListener('change',()=>show(+pick.value));"""


def render(title: str, chars: list[str], series: list[Series], next_chars: list[list[tuple[str, float]]] | None = None,
           note: str = "") -> str:
    """The page as one string; the first series is drawn in the HTML itself, the others on choosing them."""
    if not series:
        raise ValueError("a page needs at least one series")
    for s in series:
        if len(s.values) != len(chars):
            raise ValueError(f"series {s.label!r} has {len(s.values)} values for {len(chars)} characters")
    first = series[0]
    spans = "".join(
        f'<span style="background:{colour(v, first.lo, first.hi)}" '
        f'title="{html.escape(_tip(v, next_chars[i] if next_chars else None))}">{html.escape(c)}</span>'
        for i, (c, v) in enumerate(zip(chars, first.values, strict=True)))
    options = "".join(f'<option value="{k}">{html.escape(s.label)}</option>' for k, s in enumerate(series))
    data = {"series": [{"label": s.label, "lo": s.lo, "hi": s.hi, "values": [round(v, 4) for v in s.values]} for s in series],
            "next": [[[c, round(p, 4)] for c, p in n] for n in next_chars] if next_chars else None}
    blob = json.dumps(data, ensure_ascii=True).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body><h1 style="font-size:20px">{html.escape(title)}</h1><p>{html.escape(note)}</p>
<p><label>unit <select id="series">{options}</select></label>
&nbsp; <span id="lo">{first.lo:.2f}</span> <span class="bar"></span> <span id="hi">{first.hi:.2f}</span>
&nbsp; <small>hover a character: its value and the model's next-character top-k</small></p>
<div id="text">{spans}</div>
<script id="data" type="application/json">{blob}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
