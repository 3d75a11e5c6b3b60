"""The artifact contract: models/<name>/<version>/{model.onnx, tokenizer.json, meta.json}.

Training writes these files and the service reads them; this module is the one definition
both sides use (it needs only the standard library and numpy, never torch).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "rnnserve.artifact/v1"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"

KINDS = ("char_lm", "classifier")
CELLS = ("rnn", "lstm", "gru")

# Graph I/O names. A char LM graph is tokens[B,T] + state -> logits[B,T,V] + new state;
# a classifier graph is tokens[B,T] + lengths[B] -> logits[B,C].
TOKENS = "tokens"
LENGTHS = "lengths"
LOGITS = "logits"


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state tensor of a char LM: fed as `input`, returned as `output`, shape [L, B, H]."""

    input: str
    output: str
    n_layer: int
    hidden_size: int


def state_specs(cell: str, n_layer: int, hidden_size: int) -> list[StateSpec]:
    """LSTM carries (h, c); GRU and the vanilla RNN carry h only."""
    names = [("h0", "hn"), ("c0", "cn")] if cell == "lstm" else [("h0", "hn")]
    return [StateSpec(i, o, n_layer, hidden_size) for i, o in names]


@dataclass
class Meta:
    """meta.json: what the model is, how it was made and how well it did.

    `sizes` holds n_layer, n_embd, hidden_size, vocab_size (+ bidirectional, n_class for classifiers);
    `training` is the resolved training config, `data` names each data file with its sha256,
    `evaluation` the measured figures, `versions` the library versions and opset,
    `runtime` the serving hints measured at export (best intra-op thread count).
    """

    kind: str
    cell: str
    sizes: dict[str, Any]
    state: list[StateSpec] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    format: str = FORMAT

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise ValueError(f"meta.json format {self.format!r} is not {FORMAT!r}")
        if self.kind not in KINDS:
            raise ValueError(f"meta.json kind {self.kind!r} is not one of {KINDS}")
        if self.cell not in CELLS:
            raise ValueError(f"meta.json cell {self.cell!r} is not one of {CELLS}")
        for key in ("n_layer", "hidden_size", "vocab_size"):
            if not isinstance(self.sizes.get(key), int) or self.sizes[key] <= 0:
                raise ValueError(f"meta.json sizes.{key} must be a positive integer")
        self.state = [s if isinstance(s, StateSpec) else StateSpec(**s) for s in self.state]
        if self.kind == "char_lm" and not self.state:
            raise ValueError("meta.json of a char_lm must list its state tensors")
        if self.kind == "classifier" and len(self.labels) < 2:
            raise ValueError("meta.json of a classifier must list at least two labels")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Meta:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"meta.json has unknown keys: {sorted(unknown)}")
        return cls(**d)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Meta:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
