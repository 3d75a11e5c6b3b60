"""One loaded model version: its artifact's meta and tokenizer(s), and the runner its kind made from the graph(s)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from service.artifact import Meta


class Runner(Protocol):
    """The graph of one version behind ONNX Runtime, shaped by its kind (service/models/runners.py)."""

    def self_check(self) -> None:
        """One real call at load time: ValueError when the graph does not behave as meta.json says."""
        ...


@dataclass
class Model:
    name: str
    version: int
    path: Path
    meta: Meta
    tokenizer: Any  # what its kind's read_tokenizer returned (a Tokenizer for char LMs and classifiers)
    runner: Any  # a Runner; which one (and so its methods) is up to the kind

    @property
    def kind(self) -> str:
        return self.meta.kind
