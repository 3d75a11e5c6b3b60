"""The artifact contract: models/<name>/<version>/{model.onnx, tokenizer.json, meta.json}; a translator has
{encoder.onnx, decoder.onnx, source.tokenizer.json, target.tokenizer.json, meta.json} instead.

Training writes these files and the service reads them; this module is the one definition
both sides use (it needs only the standard library and numpy, never torch).
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "rnnserve.artifact/v1"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"

# A translator's files: two graphs, and one `tokenizers` JSON file per language.
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
SOURCE_TOKENIZER_FILE = "source.tokenizer.json"
TARGET_TOKENIZER_FILE = "target.tokenizer.json"

KINDS = ("char_lm", "classifier", "translator")
CELLS = ("rnn", "lstm", "gru")

# Graph I/O names. A char LM graph is tokens[B,T] + state -> logits[B,T,V] + new state;
# a classifier graph is tokens[B,T] + lengths[B] -> logits[B,C].
TOKENS = "tokens"
LENGTHS = "lengths"
LOGITS = "logits"
# A translator's encoder graph is src[B,S] + src_lengths[B] -> memory[B,S,M] + keys[B,S,H] + h0[L,B,H];
# its decoder graph is one step: prev_token[B] + h0 + memory + keys + src_mask[B,S] (bool, true at real
# tokens) -> logits[B,V] + hn[L,B,H] + attention[B,S]. The state names are the GRU's (state_specs).
SRC = "src"
SRC_LENGTHS = "src_lengths"
MEMORY = "memory"
KEYS = "keys"
PREV_TOKEN = "prev_token"
SRC_MASK = "src_mask"
ATTENTION = "attention"
# Keys of meta.json's `translator` object.
TRANSLATOR_KEYS = ("encoder", "decoder", "tokenizers", "languages", "special_ids", "max_len", "beam")

# The most bytes read from each file: an artifact is untrusted input and must not exhaust memory.
# meta.json is ~2.5 KiB, and ModelInfo carries its labels, description and evaluation: at 64 KiB,
# ListModels of 50 models still fits gRPC's 4 MiB message. A word tokenizer of 14k words is
# 200 KiB; protobuf caps a graph at 2 GiB.
MAX_BYTES = {META_FILE: 64 << 10, TOKENIZER_FILE: 32 << 20, MODEL_FILE: 2 << 30, ENCODER_FILE: 2 << 30,
             DECODER_FILE: 2 << 30, SOURCE_TOKENIZER_FILE: 32 << 20, TARGET_TOKENIZER_FILE: 32 << 20}
MAX_JSON_DEPTH = 32  # meta.json nests 5 levels; the service walks it recursively (ModelInfo.evaluation)
INT64 = 1 << 63  # meta.json sizes travel as int64 in ModelInfo
# Bounds on meta.json sizes: beyond them, the load-time self-check would ask for gigabytes of state and logits.
MAX_SIZES = {"n_layer": 256, "hidden_size": 1 << 16, "vocab_size": 1 << 22}
MAX_THREADS = 256


def shown(path: Path | str) -> str:
    """A path as one log line can carry it: a name with a newline or undecodable bytes is shown escaped."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def read_inside(path: Path, root: Path, limit: int) -> bytes:
    """The bytes of `path`, read only if it is a regular file that lies inside `root` and has at most `limit` bytes.

    Symlinks are followed only as far as they stay inside the root; the check is repeated on the
    descriptor actually opened (/proc/self/fd), so a link swapped in between cannot lead the read
    outside. O_NONBLOCK: opening a FIFO planted as model.onnx must not hang the load.
    """
    name = path.name
    real_root = Path(root).resolve()
    try:
        real = Path(path).resolve(strict=True)
    except FileNotFoundError:
        raise ValueError(f"missing {name}" + (" (a dangling symlink)" if path.is_symlink() else "")) from None
    except (OSError, RuntimeError) as err:  # a link loop, a permission denied
        raise ValueError(f"{name}: cannot resolve it ({type(err).__name__}: {err})") from None
    if not real.is_relative_to(real_root):
        raise ValueError(f"{name} resolves to {shown(real)}, outside the repository {shown(real_root)}")
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        proc = Path(f"/proc/self/fd/{fd}")
        if proc.is_symlink() and not Path(os.readlink(proc)).is_relative_to(real_root):
            raise ValueError(f"{name} changed while it was opened and now lies outside the repository")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{name} is not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{name} has {info.st_size} bytes, more than the {limit} read from it")
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ValueError(f"{name} has more than the {limit} bytes read from it")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_member(version_dir: Path, filename: str) -> bytes:
    """One file of an artifact at <root>/<name>/<version>/: nothing outside <root> is read (see read_inside)."""
    return read_inside(Path(version_dir) / filename, Path(version_dir).parent.parent, MAX_BYTES[filename])


def _finite(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"number {text[:20]} overflows a float")
    return x


def _int64(text: str) -> int:
    x = int(text)
    if not -INT64 <= x < INT64:
        raise ValueError(f"integer {text[:20]}... does not fit 64 bits")
    return x


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _check_tree(value: Any) -> None:
    """Depth at most MAX_JSON_DEPTH and every string UTF-8 encodable (a lone surrogate cannot go into a reply)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels")
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, x in items:
            if isinstance(k, str):
                k.encode("utf-8")
            if isinstance(x, str):
                x.encode("utf-8")
            elif isinstance(x, dict | list):
                stack.append((x, depth + 1))


def parse_json(data: bytes, filename: str) -> dict[str, Any]:
    """A JSON object from strict UTF-8 bytes; every way it can be malformed is a ValueError naming the file."""
    try:
        value = json.loads(data.decode("utf-8"), parse_float=_finite, parse_int=_int64, parse_constant=_refuse_constant)
        _check_tree(value)
    except UnicodeError as err:
        raise ValueError(f"{filename} is not UTF-8 text: {err}") from None
    except RecursionError:
        raise ValueError(f"{filename} nests too deeply to parse") from None
    except ValueError as err:
        raise ValueError(f"{filename} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{filename} must hold a JSON object, not {type(value).__name__}")
    return value


def _positive_int(value: Any, limit: int) -> bool:
    return type(value) is int and 0 < value <= limit


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
    `runtime` the serving hints measured at export (best intra-op thread count);
    `translator` (translators only) the graphs' files and I/O names, the tokenizer files, the languages,
    the special token ids, the max-length rule and the beam settings the reported BLEU used.
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
    translator: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every field checked for type and range: meta.json is untrusted input, and a lie must fail here."""
        for key in ("format", "kind", "cell", "description"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"meta.json {key} must be a string")
        for key in ("sizes", "training", "data", "evaluation", "versions", "runtime", "translator"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"meta.json {key} must be an object")
        if self.format != FORMAT:
            raise ValueError(f"meta.json format {self.format!r} is not {FORMAT!r}")
        if self.kind not in KINDS:
            raise ValueError(f"meta.json kind {self.kind!r} is not one of {KINDS}")
        if self.cell not in CELLS:
            raise ValueError(f"meta.json cell {self.cell!r} is not one of {CELLS}")
        for key, limit in MAX_SIZES.items():
            if not _positive_int(self.sizes.get(key), limit):
                raise ValueError(f"meta.json sizes.{key} must be an integer from 1 to {limit}, got {self.sizes.get(key)!r:.40}")
        threads = self.runtime.get("intra_op_num_threads", 1)
        if not _positive_int(threads, MAX_THREADS):
            raise ValueError(f"meta.json runtime.intra_op_num_threads must be an integer from 1 to {MAX_THREADS}")
        self._check_state()
        self._check_labels()
        self._check_translator()

    def _check_state(self) -> None:
        """A char LM's state must be exactly what its cell carries at its sizes; a classifier has none."""
        if not isinstance(self.state, list) or not all(isinstance(s, StateSpec | dict) for s in self.state):
            raise ValueError("meta.json state must be a list of objects")
        try:
            self.state = [s if isinstance(s, StateSpec) else StateSpec(**s) for s in self.state]
        except TypeError as err:
            raise ValueError(f"meta.json state entries need exactly input, output, n_layer, hidden_size: {err}") from None
        if self.kind == "classifier":
            if self.state:
                raise ValueError("meta.json of a classifier must not list state tensors")
            return
        expected = state_specs(self.cell, self.sizes["n_layer"], self.sizes["hidden_size"])
        if self.state != expected:
            raise ValueError(f"meta.json state {[asdict(s) for s in self.state]} is not what a {self.cell} of these sizes "
                             f"carries: {[asdict(s) for s in expected]}")

    def _check_labels(self) -> None:
        if not isinstance(self.labels, list) or not all(isinstance(x, str) and x for x in self.labels):
            raise ValueError("meta.json labels must be a list of non-empty strings")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("meta.json labels must be distinct")
        if self.kind != "classifier" and self.labels:
            raise ValueError(f"meta.json of a {self.kind} must not list labels")
        if self.kind == "classifier":
            if len(self.labels) < 2:
                raise ValueError("meta.json of a classifier must list at least two labels")
            if self.sizes.get("n_class", len(self.labels)) != len(self.labels):
                raise ValueError(f"meta.json sizes.n_class is {self.sizes['n_class']!r:.40} but it lists "
                                 f"{len(self.labels)} labels")

    def _check_translator(self) -> None:
        """A translator names its graphs, tokenizers and special ids; no other kind has a translator section."""
        if self.kind != "translator":
            if self.translator:
                raise ValueError(f"meta.json of a {self.kind} must not have a translator section")
            return
        missing = [k for k in TRANSLATOR_KEYS if not isinstance(self.translator.get(k), dict)]
        if missing:
            raise ValueError(f"meta.json translator lacks the object(s) {missing}")
        ids = self.translator["special_ids"]
        for name in ("pad", "unk", "bos", "eos"):
            if not (type(ids.get(name)) is int and 0 <= ids[name] < self.sizes["vocab_size"]):
                raise ValueError(f"meta.json translator.special_ids.{name} must be a token id below sizes.vocab_size")
        rule = self.translator["max_len"]
        if not (isinstance(rule.get("a"), int | float) and rule["a"] >= 0 and _positive_int(rule.get("b"), INT64 - 1)):
            raise ValueError("meta.json translator.max_len needs a >= 0 and an integer b >= 1 (floor(a * n + b) tokens)")

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
