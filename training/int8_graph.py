"""What every static int8 graph shares: per-channel 7-bit weights, fixed activation scales, a node builder, and the
char LM frame (a Loop over time, skipped by an If when T = 1) that the LSTM and GRU cells plug into.

ONNX Runtime's static quantization cannot quantize the ONNX LSTM or GRU ops (only DynamicQuantizeLSTM exists,
whose activation scale is computed per call over the whole batch, so one row's result depends on the others).
The static builders (int8_lstm.py, int8_gru.py, int8_classifier.py) rebuild the recurrence from the fp32
artifact's own weights with every GEMM a MatMulIntegerToFloat (uint8 activations, per-channel int8 weights) and
the cell's elementwise ops in fp32, so every row of a batch is computed on its own.

The activation scales need no calibration: what they quantize has a range known in advance. Recurrent outputs
lie in (-1, 1) by construction (LSTM: h = o * tanh(c); GRU: h' = (1 - z) * n + z * h with n = tanh(...)), so the
fixed scale 1/127 around zero point 128 covers every value any input can produce; an embedding row lies within
its table's largest absolute value. A row is therefore quantized the same way alone or batched.

Weights are 7-bit, in [-63, 63] (quantize_static's reduce_range): on x86 CPUs without VNNI, ONNX Runtime's
u8 x s8 kernel adds pairs of products in int16 (vpmaddubsw), which 255 * 127 * 2 overflows and 255 * 63 * 2
does not (weights outside [-64, 63] are what ONNX Runtime's own u8s8 -> u8u8 rewrite looks for).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service import artifact
from service.artifact.graph import UNROLLED_CELL_KEY

OPSET = 17
H_SCALE = 1.0 / 127  # quantization step of a recurrent output in (-1, 1)
H_ZERO = 128  # uint8 zero point: 0 -> 128, +-1 -> 255 / 1
W_QMAX = 63  # 7-bit weights (see the module docstring)


class UnsupportedGraphError(ValueError):
    """The fp32 graph is not an exported shape a static int8 builder knows how to rebuild."""


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def attr(node: onnx.NodeProto, name: str):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def check_forward(node: onnx.NodeProto) -> None:
    """Only what the exporters write: one direction, no clip, default activations, no sequence lengths."""
    if (attr(node, "direction") or b"forward") != b"forward" or (len(node.input) > 4 and node.input[4]) \
            or attr(node, "clip") is not None or attr(node, "activations") is not None:
        raise UnsupportedGraphError(f"{node.op_type} node {node.name!r}: only forward unclipped cells with default "
                                    "activations and no sequence_lens")


def quantize_weight(wt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[K, N] fp32 -> (int8 [K, N], per-column scale [N]), symmetric, W_QMAX levels each side."""
    scale = np.maximum(np.abs(wt).max(axis=0), 1e-12) / W_QMAX
    return np.clip(np.round(wt / scale), -W_QMAX, W_QMAX).astype(np.int8), scale.astype(np.float32)


class Builder:
    """Collects nodes and initializers; `qmatmul` is the int8 projection every GEMM of the graph uses."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix  # node and value names are unique across the main graph and its subgraphs
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0
        self._consts: set[str] = set()

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}/{hint}_{self._n}"

    def const(self, key: str, value: np.ndarray) -> str:
        """The initializer named key, added on first use (both branches of the graph share one copy)."""
        if key not in self._consts:
            self.inits.append(numpy_helper.from_array(value, key))
            self._consts.add(key)
        return key

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> list[str]:
        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name(op_type), **attrs))
        return outs

    def qmatmul(self, x: str, wt: np.ndarray, bias: np.ndarray | None, hint: str, consts: Builder,
                x_scale: float = H_SCALE) -> str:
        """x [..., K] fp32 within +-127 * x_scale @ wt [K, N] (+ bias), int8 with a fixed activation scale; constants
        go in `consts`. MatMulIntegerToFloat (ONNX Runtime's contrib op) multiplies, scales and adds the bias in one kernel.
        """
        wq, w_scale = quantize_weight(wt)
        scale = consts.const(f"{hint}_x_scale", np.array(x_scale, np.float32))
        zero = consts.const(f"{hint}_x_zero", np.array(H_ZERO, np.uint8))
        xq = self.op("QuantizeLinear", [x, scale, zero])[0]
        inputs = [xq, consts.const(f"{hint}_wq", wq), scale, consts.const(f"{hint}_w_scale", w_scale), zero,
                  consts.const(f"{hint}_w_zero", np.zeros(wq.shape[1], np.int8))]
        if bias is not None:
            inputs.append(consts.const(f"{hint}_bias", bias.astype(np.float32)))
        return self.op("MatMulIntegerToFloat", inputs, domain="com.microsoft")[0]


def values(names: list[str], elem: int = TensorProto.FLOAT) -> list[onnx.ValueInfoProto]:
    return [helper.make_tensor_value_info(n, elem, None) for n in names]


def finish(graph: onnx.GraphProto, cell: str, ir_version: int) -> onnx.ModelProto:
    """The checked model, marked with the cell it computes with plain ops (the service recognises it by the mark)."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="rnnserve", ir_version=ir_version)
    helper.set_model_props(model, {UNROLLED_CELL_KEY: cell})
    onnx.checker.check_model(model)
    return model


# One character through every layer: (builder, constants, first layer's input projection (B, G), the carried
# state [quantity][layer]) -> the new state [quantity][layer]; quantity 0 is h, whose top layer feeds the head.
Step = Callable[[Builder, Builder, str, list[list[str]]], list[list[str]]]


@dataclass
class CharLM:
    """What the char LM frame needs from a cell's module, read from the fp32 graph."""

    cell: str  # "lstm" or "gru": the graph's unrolled-cell mark
    state_in: list[str]  # graph input per carried quantity, [L, B, H] each (LSTM: h0, c0; GRU: h0)
    state_out: list[str]  # graph output per carried quantity (hn, cn / hn)
    n_layer: int
    hidden_size: int
    input_table: np.ndarray  # (V, G): the first layer's input projection of each character, biases folded in
    head_w: np.ndarray  # (H, V)
    head_b: np.ndarray  # (V,)
    step: Step


def read_head(model: onnx.ModelProto, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A char LM's embedding table (V, E), head weight (H, V) and head bias (V,)."""
    nodes = model.graph.node
    embeds = [n for n in nodes if n.op_type == "Gather" and n.input[0] in w and n.input[1] == artifact.TOKENS]
    heads = [n for n in nodes if n.op_type == "MatMul" and n.input[1] in w]
    biases = [n for n in nodes if n.op_type == "Add" and n.output[0] == artifact.LOGITS]
    if len(embeds) != 1 or len(heads) != 1 or len(biases) != 1:
        raise UnsupportedGraphError("expected one embedding Gather, one head MatMul and the logits Add")
    bias_name = next(i for i in biases[0].input if i in w)
    return w[embeds[0].input[0]], w[heads[0].input[1]], w[bias_name]


def state_names(model: onnx.ModelProto, first: onnx.NodeProto, last: onnx.NodeProto, inputs: tuple[int, ...],
                outputs: tuple[int, ...]) -> tuple[list[str], list[str]]:
    """The graph's state inputs and outputs: a one-layer export wires them to the recurrent node itself; a deeper
    one slices each input per layer (Slice of the graph input) and concatenates each output over layers."""
    ins, outs = {i.name for i in model.graph.input}, {o.name for o in model.graph.output}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumer = {i: n for n in model.graph.node for i in n.input}
    state_in = [v if v in ins else producer[v].input[0] for v in (first.input[k] for k in inputs)]
    state_out = [v if v in outs else consumer[v].output[0] for v in (last.output[k] for k in outputs)]
    if not set(state_in) <= ins or not set(state_out) <= outs:
        raise UnsupportedGraphError(f"state {state_in} -> {state_out} are not the graph's inputs and outputs")
    return state_in, state_out


def _one_step_branch(g: Builder, lm: CharLM, xproj_t: str, state: list[list[str]]) -> onnx.GraphProto:
    """T = 1 (every decode step): the step without a Loop, whose per-iteration bookkeeping costs as much as a layer."""
    b = Builder("one_step")
    axis0 = g.const("axis0", np.array([0], np.int64))
    new = lm.step(b, g, b.op("Squeeze", [xproj_t, axis0])[0], state)
    top = b.op("Unsqueeze", [new[0][-1], axis0])[0]  # (1, B, H)
    outs = [b.op("Identity", [v])[0] for q in new for v in q] + [top]
    return helper.make_graph(b.nodes, "one_step", [], values(outs))


def _loop_branch(g: Builder, lm: CharLM, xproj_t: str, steps: str, state: list[list[str]]) -> onnx.GraphProto:
    """T > 1 (a prompt's prefill): a Loop over time carrying the state, scanning out the top layer's h."""
    b = Builder("loop_body")
    carried = [[f"q{q}_l{k}_in" for k in range(lm.n_layer)] for q in range(len(state))]
    x = b.op("Gather", [xproj_t, "t"], axis=0)[0]  # (B, G): this step's first-layer input projection
    new = lm.step(b, g, x, carried)
    outs = [b.op("Identity", ["cond_in"])[0], *(v for q in new for v in q), b.op("Identity", [new[0][-1]])[0]]
    body = helper.make_graph(b.nodes, f"{lm.cell}_step",
                             [helper.make_tensor_value_info("t", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                              *values([v for q in carried for v in q])],
                             [helper.make_tensor_value_info(outs[0], TensorProto.BOOL, []), *values(outs[1:])])
    loop = Builder("loop")
    results = loop.op("Loop", [steps, "", *(v for q in state for v in q)], n_out=len(state) * lm.n_layer + 1, body=body)
    return helper.make_graph(loop.nodes, "loop", [], values(results))


def char_lm(lm: CharLM, ir_version: int) -> onnx.ModelProto:
    """The int8 graph of a char LM, same inputs, outputs and dynamic axes as the fp32 export:
    tokens [B, T], state [L, B, H] each -> logits [B, T, V], new state; prefill (T characters) and decode (T = 1)."""
    L, H, V = lm.n_layer, lm.hidden_size, lm.head_w.shape[1]
    g = Builder("main")  # the main graph; its initializers also hold the branches' constants
    xproj = g.op("Gather", [g.const("input_projection", lm.input_table), artifact.TOKENS])[0]  # (B, T, G)
    xproj_t = g.op("Transpose", [xproj], perm=[1, 0, 2])[0]  # (T, B, G)
    steps = g.op("Gather", [g.op("Shape", [artifact.TOKENS])[0], g.const("time_axis", np.array(1, np.int64))], axis=0)[0]
    state = [[g.op("Gather", [name, g.const(f"layer{k}", np.array(k, np.int64))], axis=0)[0] for k in range(L)]
             for name in lm.state_in]
    one = g.op("Equal", [steps, g.const("one", np.array(1, np.int64))])[0]
    n_out = len(state) * L
    results = g.op("If", [one], n_out=n_out + 1, then_branch=_one_step_branch(g, lm, xproj_t, state),
                   else_branch=_loop_branch(g, lm, xproj_t, steps, state))
    axis0 = g.const("axis0", np.array([0], np.int64))
    for q, name in enumerate(lm.state_out):
        layers = results[q * L : (q + 1) * L]
        g.nodes.append(helper.make_node("Concat", [g.op("Unsqueeze", [v, axis0])[0] for v in layers], [name], axis=0))
    seq = g.op("Transpose", [results[-1]], perm=[1, 0, 2])[0]  # tops (T, B, H) -> (B, T, H)
    g.nodes.append(helper.make_node("Identity", [g.qmatmul(seq, lm.head_w, lm.head_b, "head", g)], [artifact.LOGITS]))

    f = TensorProto.FLOAT
    graph = helper.make_graph(
        g.nodes, f"char_lm_{lm.cell}_int8",
        [helper.make_tensor_value_info(artifact.TOKENS, TensorProto.INT64, ["batch", "time"]),
         *(helper.make_tensor_value_info(name, f, [L, "batch", H]) for name in lm.state_in)],
        [helper.make_tensor_value_info(artifact.LOGITS, f, ["batch", "time", V]),
         *(helper.make_tensor_value_info(name, f, [L, "batch", H]) for name in lm.state_out)],
        g.inits)
    return finish(graph, lm.cell, ir_version)
