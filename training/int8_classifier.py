"""A (Bi)LSTM classifier's graph with each LSTM node replaced by int8 MatMuls with fixed activation scales.

The frame, the quantization and why no calibration is needed are in int8_graph.py. Unlike a char LM's, the
classifier's graph is kept as exported (the reversal of each row within its length for the backward direction,
the masks, the mean and max pooling, the head) and only its LSTM nodes are rewritten, each as one GEMM for the
input projection of every time step at once and a Loop over time for the recurrence, whose GEMM is the only
one per step. The input projection's activation scale comes from what the node reads: an embedding row
(through the reversal's gathers) lies within the table's largest absolute value, so a fixed scale from that
maximum covers every token; a later layer reads LSTM outputs, in (-1, 1) as everywhere else. The vocabulary is
too large for the char LM's trick (a per-token table of the first layer's projection: 29 MB here), but the
embedding table itself is stored as those same uint8 levels and dequantized after the lookup: the LSTM's
quantizer then gives back exactly the stored levels, so this changes no result and stores the table
(most of the graph) in a quarter of the bytes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from service import artifact
from training.int8_graph import H_ZERO, Builder, UnsupportedGraphError, finish, initializers, values
from training.int8_lstm import cell, read_lstm_layers, split_iof_g

# Ops that only move or select their first input's values (or concatenate inputs): the range of what they
# output is the range of what they read.
_SELECTS = {"Gather", "GatherElements", "Transpose", "Squeeze", "Unsqueeze", "Reshape", "Identity", "Slice", "Expand"}


def input_bound(model: onnx.ModelProto, name: str, w: dict[str, np.ndarray]) -> float:
    """The largest absolute value `name` can take: a table's maximum, 1 for an LSTM's h, else UnsupportedGraphError."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def bound(v: str) -> float:
        if v in w:
            return float(np.abs(w[v]).max())
        node = producer.get(v)
        if node is not None and node.op_type == "LSTM" and v in node.output[:2]:  # Y and Y_h: h = o * tanh(c)
            return 1.0
        if node is not None and node.op_type in _SELECTS:
            return bound(node.input[0])
        if node is not None and node.op_type == "Concat":
            return max(bound(i) for i in node.input)
        raise UnsupportedGraphError(f"cannot bound {v!r} ({node.op_type if node else 'a graph input'}), which an LSTM reads")

    return bound(name)


def _x_scale(bound: float) -> float:
    """The fixed activation scale of values within +-bound: 127 levels each side of H_ZERO (a float32 value, so the
    embedding's stored levels and the LSTM input's quantizer share it exactly)."""
    return float(np.float32(max(bound, 1e-12) / 127))


def _embedding(b: Builder, node: onnx.NodeProto, table: np.ndarray) -> None:
    """Gather(table, tokens) as Gather(uint8 levels, tokens) -> DequantizeLinear, on the LSTM input's own levels."""
    scale = _x_scale(float(np.abs(table).max()))
    levels = (np.clip(np.round(table / scale), -127, 127) + H_ZERO).astype(np.uint8)
    rows = b.op("Gather", [b.const(f"{node.input[0]}_uint8", levels), node.input[1]], **_attrs(node))[0]
    b.nodes.append(helper.make_node("DequantizeLinear", [rows, b.const(f"{node.input[0]}_scale", np.array(scale, np.float32)),
                                                         b.const(f"{node.input[0]}_zero", np.array(H_ZERO, np.uint8))],
                                    [node.output[0]], name=b.name("DequantizeLinear")))


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _lstm(b: Builder, node: onnx.NodeProto, w: dict[str, np.ndarray], x_bound: float, k: int) -> None:
    """The nodes that compute what the LSTM node did (outputs Y (T, 1, B, H), Y_h, Y_c (1, B, H)), appended to b."""
    W, R, bias = read_lstm_layers(node, w)
    H = R.shape[1]
    if len(node.input) < 7 or not node.input[5] or not node.input[6]:
        raise UnsupportedGraphError(f"LSTM node {node.name!r}: expected initial_h and initial_c inputs (as exported)")
    xproj = b.qmatmul(node.input[0], W.T, bias, f"lstm{k}_w", b, x_scale=_x_scale(x_bound))  # (T, B, 4H)
    axis0 = b.const("axis0", np.array([0], np.int64))
    steps = b.op("Gather", [b.op("Shape", [node.input[0]])[0], b.const("zero", np.array(0, np.int64))], axis=0)[0]
    h0, c0 = (b.op("Squeeze", [node.input[i], axis0])[0] for i in (5, 6))  # (B, H)

    body = Builder(f"lstm{k}_step")
    t, cond, h, c = (f"lstm{k}_step/{v}" for v in ("t", "cond", "h", "c"))
    gates = body.op("Add", [body.op("Gather", [xproj, t], axis=0)[0], body.qmatmul(h, R.T, None, f"lstm{k}_r", b)])[0]
    h_new, c_new = cell(body, gates, c, split_iof_g(b, H))
    outs = [body.op("Identity", [cond])[0], h_new, c_new, body.op("Identity", [h_new])[0]]
    graph = helper.make_graph(body.nodes, f"lstm{k}_step",
                              [helper.make_tensor_value_info(t, TensorProto.INT64, []),
                               helper.make_tensor_value_info(cond, TensorProto.BOOL, []), *values([h, c])],
                              [helper.make_tensor_value_info(outs[0], TensorProto.BOOL, []), *values(outs[1:])])
    h_n, c_n, ys = b.op("Loop", [steps, "", h0, c0], n_out=3, body=graph)
    for out, value, axis in zip(node.output, (ys, h_n, c_n), (1, 0, 0), strict=False):
        if out:
            b.nodes.append(helper.make_node("Unsqueeze", [value, b.const(f"axis{axis}", np.array([axis], np.int64))],
                                            [out], name=b.name("Unsqueeze")))


def build(fp32: onnx.ModelProto) -> onnx.ModelProto:
    """The int8 graph of an exported LSTM classifier: tokens [B, T], lengths [B] -> logits [B, C], as before."""
    w, g = initializers(fp32), fp32.graph
    lstms = [n for n in g.node if n.op_type == "LSTM"]
    if artifact.LENGTHS not in {i.name for i in g.input} or not lstms:
        raise UnsupportedGraphError("expected a classifier graph (tokens, lengths) with LSTM nodes")
    bounds = {n.name: input_bound(fp32, n.input[0], w) for n in lstms}  # read before any node is replaced
    b = Builder("int8")
    for node in g.node:
        if node.op_type == "LSTM":
            _lstm(b, node, w, bounds[node.name], lstms.index(node))
        elif node.op_type == "Gather" and node.input[0] in w and node.input[1] == artifact.TOKENS:
            _embedding(b, node, w[node.input[0]])
        else:
            b.nodes.append(node)
    used = {i for n in b.nodes for i in n.input}
    kept = [t for t in g.initializer if t.name in used]  # the LSTM weights and the embedding are now int8 copies
    graph = helper.make_graph(b.nodes, f"{g.name}_int8", list(g.input), list(g.output), kept + b.inits)
    return finish(graph, "lstm", fp32.ir_version)
