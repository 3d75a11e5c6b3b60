"""meta.json: what a model is, how it was made and how well it did; every field checked, since it is untrusted input.

Training writes it and the service reads it, through this one definition (standard library only, never torch).
What each kind's meta.json must say is in kinds.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.artifact.files import MAX_BYTES, META_FILE, parse_json, read_inside
from service.artifact.kinds import KINDS, OWN_SECTIONS, RULES, StateSpec

FORMAT = "rnnserve.artifact/v1"
CELLS = ("rnn", "lstm", "gru")
PRECISIONS = ("fp32", "int8")

# Graph I/O names. A char LM graph is tokens[B,T] + state -> logits[B,T,V] + new state;
# a classifier graph is tokens[B,T] + lengths[B] -> logits[B,C].
TOKENS = "tokens"
LENGTHS = "lengths"
LOGITS = "logits"
# A translator's encoder graph is src[B,S] + src_lengths[B] -> memory[B,S,M] + keys[B,S,H] + h0[L,B,H];
# its decoder graph is one step: prev_token[B] + h0 + memory + keys + src_mask[B,S] (bool, true at real
# tokens) -> logits[B,V] + hn[L,B,H] + attention[B,S]. The state names are the decoder cell's (state_specs).
SRC = "src"
SRC_LENGTHS = "src_lengths"
MEMORY = "memory"
KEYS = "keys"
PREV_TOKEN = "prev_token"
SRC_MASK = "src_mask"
ATTENTION = "attention"
# A captioner's encoder graph is image[B,3,H,W] (float32 in [-1, 1], see image.py) -> memory[B,R,M] + keys[B,R,K]
# + its decoder's initial state (h0, c0: [L,B,H]), R being the feature grid's regions (rows x cols, row-major);
# its decoder graph is the translator's step with src_mask all true.
IMAGE = "image"

# Bounds on meta.json sizes: beyond them, the load-time self-check would ask for gigabytes of state and logits.
MAX_SIZES = {"n_layer": 256, "hidden_size": 1 << 16, "vocab_size": 1 << 22}
MAX_THREADS = 256


def _positive_int(value: Any, limit: int) -> bool:
    return type(value) is int and 0 < value <= limit


@dataclass
class Meta:
    """meta.json: what the model is, how it was made and how well it did.

    `sizes` holds n_layer, n_embd, hidden_size, vocab_size (+ bidirectional, n_class for classifiers);
    `training` is the resolved training config, `data` names each data file with its sha256,
    `evaluation` the measured figures, `versions` the library versions and opset,
    `runtime` the serving hints measured at export (best intra-op thread count);
    `precision` the graph's weights: "fp32" as exported, "int8" as quantized (python -m training quantize);
    `translator` (translators only) the graphs' files and I/O names, the tokenizer files, the languages,
    the special token ids, the max-length rule and the beam settings the reported BLEU used;
    `captioner` (captioners only) likewise, with the image size and scaling and the feature grid.
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
    precision: str = "fp32"
    format: str = FORMAT
    translator: dict[str, Any] = field(default_factory=dict)
    captioner: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every field checked for type and range: meta.json is untrusted input, and a lie must fail here."""
        for key in ("format", "kind", "cell", "description", "precision"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"meta.json {key} must be a string")
        for key in ("sizes", "training", "data", "evaluation", "versions", "runtime", "translator", "captioner"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"meta.json {key} must be an object")
        if self.format != FORMAT:
            raise ValueError(f"meta.json format {self.format!r} is not {FORMAT!r}")
        if self.kind not in KINDS:
            raise ValueError(f"meta.json kind {self.kind!r} is not one of {KINDS}")
        if self.cell not in CELLS:
            raise ValueError(f"meta.json cell {self.cell!r} is not one of {CELLS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"meta.json precision {self.precision!r:.40} is not one of {PRECISIONS}")
        for key, limit in MAX_SIZES.items():
            if not _positive_int(self.sizes.get(key), limit):
                raise ValueError(f"meta.json sizes.{key} must be an integer from 1 to {limit}, got {self.sizes.get(key)!r:.40}")
        threads = self.runtime.get("intra_op_num_threads", 1)
        if not _positive_int(threads, MAX_THREADS):
            raise ValueError(f"meta.json runtime.intra_op_num_threads must be an integer from 1 to {MAX_THREADS}")
        self._check_state()
        self._check_labels()
        for section, owner in OWN_SECTIONS.items():
            if getattr(self, section) and self.kind != owner:
                raise ValueError(f"meta.json of a {self.kind} must not have a {section} section")
        RULES[self.kind](self)

    def _check_state(self) -> None:
        if not isinstance(self.state, list) or not all(isinstance(s, StateSpec | dict) for s in self.state):
            raise ValueError("meta.json state must be a list of objects")
        try:
            self.state = [s if isinstance(s, StateSpec) else StateSpec(**s) for s in self.state]
        except TypeError as err:
            raise ValueError(f"meta.json state entries need exactly input, output, n_layer, hidden_size: {err}") from None

    def _check_labels(self) -> None:
        if not isinstance(self.labels, list) or not all(isinstance(x, str) and x for x in self.labels):
            raise ValueError("meta.json labels must be a list of non-empty strings")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("meta.json labels must be distinct")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Meta:
        if not isinstance(d, dict):
            raise ValueError("meta.json must hold a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"meta.json has unknown keys: {sorted(unknown)[:5]!r:.200}")
        missing = {"kind", "cell", "sizes"} - set(d)
        if missing:
            raise ValueError(f"meta.json lacks {sorted(missing)}")
        return cls(**d)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def parse(cls, data: bytes) -> Meta:
        """meta.json's bytes -> Meta; ValueError saying what is wrong."""
        return cls.from_dict(parse_json(data, META_FILE))

    @classmethod
    def load(cls, path: Path) -> Meta:
        """A meta.json file of an artifact: read as read_member reads it (inside <root>, at most MAX_BYTES)."""
        path = Path(path)
        return cls.parse(read_inside(path, path.parent.parent, MAX_BYTES[META_FILE]))
