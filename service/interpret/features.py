"""Feature detectors computed from text alone: what a unit might track, one value per character.

Each value describes the state *after reading* that character, which is what a unit's activation
at that step can know: an opening quote is inside the quotes, a closing one is outside again, a
newline is at position 0 of the next line. NaN marks characters a feature does not score.
The detectors follow the cells found by Karpathy, Johnson & Fei-Fei (2015): quotes, line length,
brackets and nesting depth, comments and strings in code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

OPEN, CLOSE = "([{", ")]}"
TAB_WIDTH = 4
_SPEAKER = re.compile(r"[A-Z][A-Za-z' ]*[A-Za-z]:")  # "ROMEO:", "First Citizen:", "KING RICHARD III:"


def in_double_quotes(text: str) -> np.ndarray:
    """1 from an opening " up to (not including) its closing ", in prose (apostrophes are not quotes)."""
    out, inside = np.zeros(len(text)), False
    for t, ch in enumerate(text):
        if ch == '"':
            inside = not inside
        out[t] = inside
    return out


def bracket_depth(text: str) -> np.ndarray:
    """How many ( [ { are open, never below 0: the nesting depth of prose."""
    out, depth = np.zeros(len(text)), 0
    for t, ch in enumerate(text):
        depth = depth + 1 if ch in OPEN else max(0, depth - 1) if ch in CLOSE else depth
        out[t] = depth
    return out


def line_position(text: str) -> np.ndarray:
    """Characters since the last newline (the newline itself is position 0 of the next line)."""
    out, pos = np.zeros(len(text)), 0
    for t, ch in enumerate(text):
        pos = 0 if ch == "\n" else pos + 1
        out[t] = pos
    return out


def indentation(text: str) -> np.ndarray:
    """Leading whitespace of the current line read so far, in columns (a tab counts TAB_WIDTH)."""
    out, indent, leading = np.zeros(len(text)), 0, True
    for t, ch in enumerate(text):
        if ch == "\n":
            indent, leading = 0, True
        elif leading and ch in " \t":
            indent += TAB_WIDTH if ch == "\t" else 1
        else:
            leading = False
        out[t] = indent
    return out


def block_indentation(text: str) -> np.ndarray:
    """Indentation of the last line whose first non-blank character has been read: the block depth a model
    must carry across newlines and leading spaces to indent the next line."""
    out, block, current, leading = np.zeros(len(text)), 0, 0, True
    for t, ch in enumerate(text):
        if ch == "\n":
            current, leading = 0, True
        elif leading and ch in " \t":
            current += TAB_WIDTH if ch == "\t" else 1
        elif leading:
            block, leading = current, False
        out[t] = block
    return out


def python_lexer(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(string, in_comment, bracket_depth) of Python source, from a small lexer; string is the length of the
    open string's quote (1: ' or ", 3: triple-quoted, mostly docstrings), 0 outside strings.

    Strings open with ' " ''' or \"\"\", backslash escapes the next character, a single-quoted
    string also ends at a newline; # starts a comment up to the newline. Brackets inside strings
    and comments do not count. Prefixes (r, b, f) need no handling: they precede the quote.
    """
    n = len(text)
    string, comment, depth = np.zeros(n), np.zeros(n), np.zeros(n)
    quote, in_comment, d, t = "", False, 0, 0
    while t < n:
        ch = text[t]
        if in_comment:
            in_comment = ch != "\n"
            comment[t] = in_comment
        elif quote:
            if ch == "\\" and t + 1 < n:  # an escape (or a line continuation) keeps the string open
                string[t : t + 2] = len(quote)
                depth[t : t + 2] = d
                t += 2
                continue
            if text.startswith(quote, t):
                string[t : t + len(quote) - 1] = len(quote)  # the closing quote's last character is outside
                depth[t : t + len(quote)] = d
                t, quote = t + len(quote), ""
                continue
            if ch == "\n" and len(quote) == 1:
                quote = ""  # an unterminated single-quoted string ends with its line
            else:
                string[t] = len(quote)
        elif ch == "#":
            in_comment, comment[t] = True, 1
        elif ch in "'\"":
            quote = ch * 3 if text.startswith(ch * 3, t) else ch
            string[t : t + len(quote)] = len(quote)
            depth[t : t + len(quote)] = d
            t += len(quote)
            continue
        elif ch in OPEN:
            d += 1
        elif ch in CLOSE:
            d = max(0, d - 1)
        depth[t] = d
        t += 1
    return string, comment, depth


def speech_line(text: str) -> np.ndarray:
    """Tiny shakespeare's layout: 1 on the lines of a speech, 0 on a speaker's name line
    ("ROMEO:" alone on a line after a blank one); NaN on newlines and blank lines."""
    out = np.full(len(text), np.nan)
    start, previous_blank = 0, True
    for line in text.split("\n"):
        if line.strip():
            out[start : start + len(line)] = 0.0 if previous_blank and _SPEAKER.fullmatch(line) else 1.0
        previous_blank = not line.strip()
        start += len(line) + 1
    return out


@dataclass(frozen=True)
class Feature:
    name: str
    binary: bool  # scored by AUC as well as by correlation
    about: str


FEATURES = (
    Feature("in_quotes", True, 'inside double quotes (prose)'),
    Feature("bracket_depth", False, "open ( [ { in prose"),
    Feature("in_brackets", True, "inside ( [ { in prose"),
    Feature("line_position", False, "characters since the newline"),
    Feature("speech_line", True, "a line of a speech (1) vs a speaker's name line (0)"),
    Feature("in_string", True, "inside a Python string literal"),
    Feature("in_short_string", True, "inside a ' or \" string (vs not in any string)"),
    Feature("in_long_string", True, "inside a triple-quoted string, mostly docstrings (vs not in any string)"),
    Feature("in_comment", True, "inside a Python # comment"),
    Feature("code_depth", False, "open ( [ { in Python, outside strings and comments"),
    Feature("indentation", False, "leading whitespace of the line read so far, in columns"),
    Feature("block_indent", False, "indentation of the last line begun, held across newlines"),
)

PROSE = ["in_quotes", "bracket_depth", "in_brackets", "line_position", "speech_line"]
CODE = ["in_string", "in_short_string", "in_long_string", "in_comment", "code_depth", "indentation", "block_indent",
        "line_position"]


def compute(text: str, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """name -> (T,) float64 for the chosen features (all when names is None)."""
    names = names or [f.name for f in FEATURES]
    known = {f.name for f in FEATURES}
    if unknown := [n for n in names if n not in known]:
        raise ValueError(f"unknown feature(s) {unknown}; known: {sorted(known)}")
    lazy: dict[str, Callable[[], np.ndarray]] = {
        "in_quotes": lambda: in_double_quotes(text),
        "bracket_depth": lambda: bracket_depth(text),
        "in_brackets": lambda: (bracket_depth(text) > 0).astype(float),
        "line_position": lambda: line_position(text),
        "speech_line": lambda: speech_line(text),
        "indentation": lambda: indentation(text),
        "block_indent": lambda: block_indentation(text),
    }
    if {"in_string", "in_short_string", "in_long_string", "in_comment", "code_depth"} & set(names):
        string, comment, depth = python_lexer(text)
        lazy.update(in_string=lambda: (string > 0).astype(float), in_comment=lambda: comment, code_depth=lambda: depth,
                    in_short_string=lambda: np.where(string == 3, np.nan, string),  # the other strings are not scored
                    in_long_string=lambda: np.where(string == 1, np.nan, string / 3))
    return {n: lazy[n]() for n in names}
