"""Per-character activations of a char LM: the ONNX recurrent ops' equations in numpy, on model.onnx's own weights.

Why not a second traced graph in the artifact: it would store every weight twice (models/ has a
size budget) and exist only for artifacts exported after it; reading the served graph's own
LSTM/GRU/RNN nodes works for every artifact ever exported. Each trace is checked against the
served graph itself: the final state must equal what model.onnx returns for the same text.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service import artifact
from service.errors import FailedPrecondition

# What each cell exposes, in this order (names follow the proto's TraceStep fields).
QUANTITIES = {
    "lstm": ("hidden", "cell", "input_gate", "forget_gate", "output_gate"),
    "gru": ("hidden", "update_gate", "reset_gate"),
    "rnn": ("hidden",),
}
GATES = {"lstm": ("input_gate", "forget_gate", "output_gate"), "gru": ("update_gate", "reset_gate"), "rnn": ()}
_OPS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}
_ACTIVATIONS = {"LSTM": [b"Sigmoid", b"Tanh", b"Tanh"], "GRU": [b"Sigmoid", b"Tanh"], "RNN": [b"Tanh"]}  # the op defaults
VERIFY_TOL = 1e-4  # numpy trace vs the served graph's final state, max abs difference


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
    weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in graph.initializer}
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
        B = weights[n.input[3]][0] if len(n.input) > 3 and n.input[3] else np.zeros(2 * G)
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

    def run(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        B, T = ids.shape
        L, H = self.n_layer, self.hidden_size
        out = {q: np.empty((L, B, T, H), np.float32) for q in self.quantities}
        x = self.embedding[ids]  # (B, T, E), float64 throughout: the float32 graphs differ from it by ~1e-6
        for n, layer in enumerate(self.layers):
            xw = x @ layer.W.T + layer.Wb  # (B, T, G*H): the input half of every gate, all steps at once
            hs = np.empty((B, T, H))
            step = {"lstm": self._lstm, "gru": self._gru, "rnn": self._rnn}[self.cell]
            step(layer, xw, hs, {q: v[n] for q, v in out.items()})
            x = hs
        return out

    @staticmethod
    def _lstm(layer: Layer, xw: np.ndarray, hs: np.ndarray, out: dict[str, np.ndarray]) -> None:
        """Hochreiter & Schmidhuber (1997) with a forget gate (Gers et al. 2000), the ONNX LSTM op:
        i, o, f = sigmoid(.), g = tanh(.), c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t)."""
        B, T, H = hs.shape
        h, c = np.zeros((B, H)), np.zeros((B, H))
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
    def _gru(layer: Layer, xw: np.ndarray, hs: np.ndarray, out: dict[str, np.ndarray]) -> None:
        """Cho et al. (2014), the ONNX GRU op: z, r = sigmoid(.), n = tanh(x W_h + r * (h R_h + b)),
        h_t = (1 - z) * n + z * h_{t-1} (linear_before_reset=1, as torch computes it)."""
        B, T, H = hs.shape
        h = np.zeros((B, H))
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
    def _rnn(layer: Layer, xw: np.ndarray, hs: np.ndarray, out: dict[str, np.ndarray]) -> None:
        """Elman (1990): h_t = tanh(x W + h_{t-1} R + b)."""
        B, T, H = hs.shape
        h = np.zeros((B, H))
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


def trace_text(tracer: Tracer, runner, tokenizer, text: str, layers: list[int], units: list[int], top_k: int) -> Trace:
    """Trace `text` from the zero state; the served graph (runner: LMRunner) gives the predictions and the check."""
    ids = tokenizer.encode(text)[None, :]  # (1, T)
    acts = tracer.run(ids)
    logits, state = runner.run(ids, runner.zero_state(1))  # (1, T, V), [(L, 1, H), ...]
    finals = {"hidden": state[0], **({"cell": state[1]} if tracer.cell == "lstm" else {})}
    worst = max(float(np.abs(acts[q][:, 0, -1] - s[:, 0]).max()) for q, s in finals.items())
    if worst >= VERIFY_TOL:
        raise RuntimeError(f"the trace disagrees with model.onnx's final state by {worst:.3g} (limit {VERIFY_TOL})")
    L, U = np.asarray(layers), np.asarray(units)
    values = {q: np.ascontiguousarray(a[L, 0, :, U].T) for q, a in acts.items()}  # (T, n_columns)
    k = min(top_k, logits.shape[-1])
    z = logits[0].astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)  # (T, V)
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return Trace(list(text), list(layers), list(units), values, top, np.take_along_axis(p, top, 1).astype(np.float32))


class Tracers:
    """One Tracer per loaded model version, read from its model.onnx on first use.

    Keyed by the version's runner, weakly: a version replaced in place by a hot reload gets a new
    runner and so a new tracer, and an unloaded version's tracer goes with it.
    """

    def __init__(self) -> None:
        self._tracers: weakref.WeakKeyDictionary[object, Tracer] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, runner: object, path: Path) -> Tracer:
        with self._lock:
            if runner not in self._tracers:
                self._tracers[runner] = Tracer.load(path / artifact.MODEL_FILE)
            return self._tracers[runner]
