"""Stop sequences in the decode batch: when a stream's text ends with one, and how much text to hold back meanwhile.

A stop sequence is matched on the text itself, so it is found whatever ids spelled it. The text that
could still grow into a stop sequence is held back, never sent: the client never sees part of one,
and the whole of a match is always among the unsent characters.
"""

from __future__ import annotations

import numpy as np


def held_suffix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that could still grow into a stop sequence (a proper prefix of one)."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


def ending(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest stop sequence `text` ends with; 0 when it ends with none."""
    return max((len(stop) for stop in stops if text.endswith(stop)), default=0)


def sendable(text: str, stops: tuple[str, ...], stop_len: int, final: bool) -> int:
    """How many characters of a stream's unsent `text` go out now.

    At the end, all but the stop sequence that ended it (stop_len, 0 for none); before that, all but
    the longest end that could still become a stop sequence.
    """
    if final:
        return len(text) - stop_len
    return len(text) - held_suffix(text, stops) if stops else len(text)


class StopTable:
    """Which ids end one of each slot's stop sequences: a step compares only the new ids with it, and matches
    the text of the few rows it flags."""

    def __init__(self, texts: list[str], n_slots: int) -> None:
        """texts: the one character each id renders as."""
        self.ids_of: dict[str, list[int]] = {}  # character -> ids that render as it
        for i, t in enumerate(texts):
            self.ids_of.setdefault(t, []).append(i)
        self.last = np.zeros((n_slots, len(texts)), bool)  # (S, V): ids that end one of the slot's stop sequences

    def admit(self, slot: int, stops: tuple[str, ...]) -> None:
        for stop in stops:
            self.last[slot, self.ids_of.get(stop[-1], [])] = True

    def release(self, slot: int) -> None:
        self.last[slot] = False

    def flagged(self, slots: np.ndarray, ids: np.ndarray) -> list[int]:
        """Rows whose new id (ids[i], in slot slots[i]) is the last character of one of their stop sequences."""
        hits = self.last[slots, ids]
        return np.flatnonzero(hits).tolist() if hits.any() else []
