"""Scheduling and batching: continuous decode batching of Generate streams (scheduler.py) and of encoder-decoder
requests such as Translate (seq2seq.py), both around loop.py's decode thread; dynamic batching of Classify texts.

Each loaded model version gets one engine, made by its kind (service/kinds/); the server and the
reloader see it only as an Engine.
"""

from __future__ import annotations

from typing import Protocol


class Engine(Protocol):
    """A model version's engine as the server and the reloader see it, whatever the model's kind."""

    @property
    def n_open(self) -> int:
        """Requests started on this engine and not finished yet: shutdown waits for them, a retired version closes at 0."""
        ...

    async def close(self) -> None:
        """Stop the engine: requests still waiting fail with UNAVAILABLE and its threads end."""
        ...
