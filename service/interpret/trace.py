"""Per-character activations of a char LM: the ONNX recurrent ops' equations in numpy, on model.onnx's own weights.

Why not a second traced graph in the artifact: it would store every weight twice (models/ has a
size budget) and exist only for artifacts exported after it; reading the served graph's own
LSTM/GRU/RNN nodes works for every artifact ever exported. Each trace is checked against the
served graph itself: after every chunk, the state must equal what model.onnx returns for the same text.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service import artifact
from service.errors import FailedPrecondition, ResourceExhausted

# What each cell exposes, in this order (names follow the proto's TraceStep fields).
QUANTITIES = {
    "lstm": ("hidden", "cell", "input_gate", "forget_gate", "output_gate"),
    "gru": ("hidden", "update_gate", "reset_gate"),
    "rnn": ("hidden",),
}
GATES = {"lstm": ("input_gate", "forget_gate", "output_gate"), "gru": ("update_gate", "reset_gate"), "rnn": ()}
_OPS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}
_ACTIVATIONS = {"LSTM": [b"Sigmoid", b"Tanh", b"Tanh"], "GRU": [b"Sigmoid", b"Tanh"], "RNN": [b"Tanh"]}  # the op defaults
# numpy trace vs the served graph's state after each chunk: |traced - served| <= ATOL + RTOL * |served|. A tracer
# that models the wrong equations is off by O(0.1) or more. Both sides compute in float32, the graph's own precision
# (float64 copies of the weights doubled what a traced version holds, and agreed no better); rounding grows along a
# chunk (the recurrence amplifies it): over 4,096-character sweeps of the bundled LMs, at most 1.2e-4 x (1 + |value|)
# with 128-character chunks, 5e-4 with 256, 2.3e-5 with 32 (float64: 1.6e-4 with 128).
VERIFY_ATOL, VERIFY_RTOL = 1e-3, 1e-3
TRACE_CHUNK_CHARS = 128  # characters computed (and held) at a time


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


@dataclass(frozen=True)
class Layer:
    """One ONNX recurrent node (ONNX operator spec): gates stacked along rows in the op's order.

    LSTM: i, o, f, c; GRU: z, r, h; RNN: one block. W (G*H, D), R (G*H, H), Wb and Rb (G*H,).
    """

    W: np.ndarray
    R: np.ndarray
    Wb: np.ndarray
    Rb: np.ndarray
    linear_before_reset: bool = True  # GRU only; torch's GRU is linear_before_reset=1


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def read_graph(path: Path) -> tuple[str, np.ndarray, list[Layer]]:
    """(cell, embedding (V, E), layers) of a char LM's model.onnx; FailedPrecondition if it is not that shape.

    Read as the repository reads it (inside the repository root, no external data files), so a
    model.onnx swapped after load cannot lead the trace outside the repository.
    """
    from onnx import numpy_helper

    from service.artifact.graph import parse

    graph = parse(artifact.read_member(path.parent, path.name)).graph
    weights = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in graph.initializer}
    embed = [n for n in graph.node if n.op_type == "Gather" and n.input[1] == artifact.TOKENS and n.input[0] in weights]
    cells = [n for n in graph.node if n.op_type in _OPS]
    if len(embed) != 1 or not cells:
        raise FailedPrecondition("this model's graph has no embedding + ONNX LSTM/GRU/RNN nodes to trace")
    layers = []
    for n in cells:
        a = _attrs(n)
        direction = a.get("direction", b"forward")
        acts = [x if isinstance(x, bytes) else x.encode() for x in a.get("activations", _ACTIVATIONS[n.op_type])]
        if (direction not in (b"forward", "forward") or a.get("clip") or acts != _ACTIVATIONS[n.op_type] or a.get("layout", 0)
                or a.get("input_forget", 0) or (len(n.input) > 4 and n.input[4])
                or (len(n.input) > 7 and n.input[7]) or any(x not in weights for x in n.input[1:3])):
            raise FailedPrecondition(f"{n.op_type} node {n.name!r} uses options the tracer does not model")
        W, R = weights[n.input[1]][0], weights[n.input[2]][0]
        G = R.shape[0]
        B = weights[n.input[3]][0] if len(n.input) > 3 and n.input[3] else np.zeros(2 * G, np.float32)
        layers.append(Layer(W, R, B[:G], B[G:], bool(a.get("linear_before_reset", 0))))
    kinds = {_OPS[n.op_type] for n in cells}
    if len(kinds) != 1:
        raise FailedPrecondition(f"mixed recurrent cells {sorted(kinds)} in one graph")
    return kinds.pop(), weights[embed[0].input[0]], layers


class Tracer:
    """ids (B, T) -> {quantity: (L, B, T, H)} from the zero state, as the served graph computes them."""

    def __init__(self, cell: str, embedding: np.ndarray, layers: list[Layer]) -> None:
        self.cell, self.embedding, self.layers = cell, embedding, layers
        self.quantities = QUANTITIES[cell]
        self.n_layer, self.hidden_size = len(layers), layers[0].R.shape[1]

    @classmethod
    def load(cls, path: Path) -> Tracer:
        return cls(*read_graph(path))

    def run(self, ids: np.ndarray, start: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Activations of every unit at every step, from `start` (the served graph's state layout: h, then c for
        an LSTM, each (L, B, H)) or from the zero state."""
        B, T = ids.shape
        L, H = self.n_layer, self.hidden_size
        if start is None:
            start = [np.zeros((L, B, H), np.float32)] * (2 if self.cell == "lstm" else 1)
        out = {q: np.empty((L, B, T, H), np.float32) for q in self.quantities}
        x = self.embedding[ids]  # (B, T, E)
        for n, layer in enumerate(self.layers):
            xw = x @ layer.W.T + layer.Wb  # (B, T, G*H): the input half of every gate, all steps at once
            hs = np.empty((B, T, H), np.float32)
            step = {"lstm": self._lstm, "gru": self._gru, "rnn": self._rnn}[self.cell]
            step(layer, xw, hs, {q: v[n] for q, v in out.items()}, *(np.asarray(s[n], np.float32) for s in start))
            x = hs
        return out

    @staticmethod
    def _lstm(layer: Layer, xw: np.ndarray, hs: np.ndarray, out: dict[str, np.ndarray], h: np.ndarray,
              c: np.ndarray) -> None:
        """Hochreiter & Schmidhuber (1997) with a forget gate (Gers et al. 2000), the ONNX LSTM op:
        i, o, f = sigmoid(.), g = tanh(.), c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t)."""
        T, H = hs.shape[1:]
        RT = layer.R.T
        for t in range(T):
            a = xw[:, t] + h @ RT + layer.Rb  # (B, 4H)
            i, o, f = _sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H]), _sigmoid(a[:, 2 * H:3 * H])
            c = f * c + i * np.tanh(a[:, 3 * H:])
            h = o * np.tanh(c)
            hs[:, t] = h
            out["cell"][:, t], out["input_gate"][:, t], out["forget_gate"][:, t], out["output_gate"][:, t] = c, i, f, o
        out["hidden"][:] = hs

    @staticmethod
    def _gru(layer: Layer, xw: np.ndarray, hs: np.ndarray, out: dict[str, np.ndarray], h: np.ndarray) -> None:
        """Cho et al. (2014), the ONNX GRU op: z, r = sigmoid(.), n = tanh(x W_h + r * (h R_h + b)),
        h_t = (1 - z) * n + z * h_{t-1} (linear_before_reset=1, as torch computes it)."""
        T, H = hs.shape[1:]
        R, Rb = layer.R, layer.Rb
        for t in range(T):
            hr = h @ R.T + Rb  # (B, 3H)
            z = _sigmoid(xw[:, t, :H] + hr[:, :H])
            r = _sigmoid(xw[:, t, H:2 * H] + hr[:, H:2 * H])
            if layer.linear_before_reset:
                n = np.tanh(xw[:, t, 2 * H:] + r * hr[:, 2 * H:])
            else:
                n = np.tanh(xw[:, t, 2 * H:] + (r * h) @ R[2 * H:].T + Rb[2 * H:])
            h = (1 - z) * n + z * h
            hs[:, t] = h
            out["update_gate"][:, t], out["reset_gate"][:, t] = z, r
        out["hidden"][:] = hs

    @staticmethod
    def _rnn(layer: Layer, xw: np.ndarray, hs: np.ndarray, out: dict[str, np.ndarray], h: np.ndarray) -> None:
        """Elman (1990): h_t = tanh(x W + h_{t-1} R + b)."""
        T = hs.shape[1]
        RT = layer.R.T
        for t in range(T):
            h = np.tanh(xw[:, t] + h @ RT + layer.Rb)
            hs[:, t] = h
        out["hidden"][:] = hs


@dataclass
class Trace:
    """One text's trace: activations of the chosen columns and the served model's next-character top-k."""

    chars: list[str]
    layers: list[int]  # column j is (layers[j], units[j])
    units: list[int]
    values: dict[str, np.ndarray]  # quantity -> (T, n_columns) float32
    top_ids: np.ndarray  # (T, k) int64, most probable first
    top_probs: np.ndarray  # (T, k) float32
    first: int = 0  # position of chars[0] in the whole text


class TraceRun:
    """One text traced chunk by chunk, so that a long trace streams as it is computed and holds one chunk at a time.

    Each chunk starts from the served graph's state at the end of the previous one and is checked
    against the graph's state at its own end, so numpy and ONNX Runtime, rounding in different orders, cannot
    drift apart over a long text. The tolerance is relative: an LSTM cell state grows with the text (761 after
    4,096 characters on the bundled Shakespeare model), and float32 carries ~7 significant digits.
    """

    def __init__(self, tracer: Tracer, runner, tokenizer, text: str, layers: list[int], units: list[int], top_k: int,
                 chunk_chars: int) -> None:  # runner: LMRunner, tokenizer: Tokenizer
        self.tracer, self.runner, self.layers, self.units = tracer, runner, list(layers), list(units)
        self.chars, self.ids = list(text), tokenizer.encode(text)  # one id per character
        self.top_k, self.chunk_chars = min(top_k, runner.vocab_size), chunk_chars
        self.state = runner.zero_state(1)  # the served graph's, [(L, 1, H), ...]
        self.pos = 0

    def next(self) -> Trace | None:
        """The trace of the next chunk_chars characters (None once the text is read)."""
        if self.pos == len(self.ids):
            return None
        begin, end = self.pos, min(self.pos + self.chunk_chars, len(self.ids))
        ids = self.ids[None, begin:end]  # (1, T)
        acts = self.tracer.run(ids, self.state)
        logits, self.state = self.runner.run(ids, self.state)  # (1, T, V), [(L, 1, H), ...]
        self._check(acts, end)
        self.pos = end
        L, U = np.asarray(self.layers), np.asarray(self.units)
        values = {q: np.ascontiguousarray(a[L, 0, :, U].T) for q, a in acts.items()}  # (T, n_columns)
        z = logits[0].astype(np.float64)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)  # (T, V)
        top = np.argsort(-p, axis=1, kind="stable")[:, :self.top_k]
        return Trace(self.chars[begin:end], self.layers, self.units, values, top,
                     np.take_along_axis(p, top, 1).astype(np.float32), begin)

    def _check(self, acts: dict[str, np.ndarray], end: int) -> None:
        finals = {"hidden": self.state[0], **({"cell": self.state[1]} if self.tracer.cell == "lstm" else {})}
        for q, want in finals.items():
            got = acts[q][:, 0, -1].astype(np.float64)  # (L, H)
            excess = np.abs(got - want[:, 0]) - (VERIFY_ATOL + VERIFY_RTOL * np.abs(want[:, 0]))
            if excess.max() > 0:
                raise FailedPrecondition(
                    f"this model cannot be traced: the tracer's {q} state disagrees with model.onnx after character "
                    f"{end} by {np.abs(got - want[:, 0]).max():.3g} (tolerance {VERIFY_ATOL:g} + {VERIFY_RTOL:g} x |value|)")


def trace_text(tracer: Tracer, runner, tokenizer, text: str, layers: list[int], units: list[int], top_k: int) -> Trace:
    """Trace `text` from the zero state in one piece (the cells report's pages); the server streams a TraceRun."""
    run = TraceRun(tracer, runner, tokenizer, text, layers, units, top_k, TRACE_CHUNK_CHARS)
    parts = list(iter(run.next, None))
    return Trace([c for t in parts for c in t.chars], list(layers), list(units),
                 {q: np.concatenate([t.values[q] for t in parts]) for q in parts[0].values},
                 np.concatenate([t.top_ids for t in parts]), np.concatenate([t.top_probs for t in parts]))


class Tracers:
    """One Tracer per loaded model version, read from its model.onnx on first use, and a cap on traces running.

    A tracer holds its version's recurrent and embedding weights in float32 (about model.onnx's size) for as
    long as the version is loaded, shared by every trace of it: a cost per traced version, not per call.

    Keyed by the version's runner, weakly: a version replaced in place by a hot reload gets a new
    runner and so a new tracer, and an unloaded version's tracer goes with it.
    """

    def __init__(self) -> None:
        self._tracers: weakref.WeakKeyDictionary[object, Tracer] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.n_open = 0  # Trace calls holding a slot (event-loop side)

    def get(self, runner: object, path: Path) -> Tracer:
        with self._lock:
            if runner not in self._tracers:
                self._tracers[runner] = Tracer.load(path / artifact.MODEL_FILE)
            return self._tracers[runner]

    @contextmanager
    def slot(self, max_open: int) -> Iterator[None]:
        """Held by one Trace call for its whole life (event-loop side); ResourceExhausted when max_open are taken."""
        if self.n_open >= max_open:
            raise ResourceExhausted(f"{self.n_open} traces are running (the limit, max_traces); retry later")
        self.n_open += 1
        try:
            yield
        finally:
            self.n_open -= 1
