"""An LSTM char LM's graph rebuilt with its cell written out as int8 MatMuls and fixed activation scales.

ONNX Runtime's static quantization cannot quantize the ONNX LSTM op (only the dynamic DynamicQuantizeLSTM
exists, whose activation scale is computed per call over the whole batch, so one row's result depends on
the others). This module rebuilds the graph from the fp32 artifact's own weights so every row is
independent: the recurrence is a Loop over time (an If skips it for T = 1, every decode step) whose body
computes the gates with MatMulIntegerToFloat (uint8 activations, per-channel int8 weights) and the cell's
elementwise ops in fp32.

The activation scale needs no calibration: every quantized activation is an LSTM output h = o * tanh(c),
inside (-1, 1) by construction, so the fixed scale 1/127 around zero point 128 covers every value any input
can produce, and a row is quantized the same way alone or batched. The first layer's input projection
needs no GEMM at all: embedding @ W_ih^T + biases is folded into one fp32 table looked up per character.
The graph keeps the artifact contract: tokens [B, T], h0/c0 [L, B, H] -> logits [B, T, V], hn/cn; the same
graph serves prefill (T characters, one call) and decode (T = 1).

Weights are 7-bit, in [-63, 63] (quantize_static's reduce_range): on x86 CPUs without VNNI, ONNX Runtime's
u8 x s8 kernel adds pairs of products in int16 (vpmaddubsw), which 255 * 127 * 2 overflows and 255 * 63 * 2
does not (weights outside [-64, 63] are what ONNX Runtime's own u8s8 -> u8u8 rewrite looks for).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service import artifact
from service.artifact.graph import UNROLLED_CELL_KEY

OPSET = 17
H_SCALE = 1.0 / 127  # quantization step of an LSTM output in (-1, 1)
H_ZERO = 128  # uint8 zero point: h = 0 -> 128, h = +-1 -> 255 / 1
W_QMAX = 63  # 7-bit weights (see the module docstring)


class UnsupportedGraphError(ValueError):
    """The fp32 graph is not the exported LSTM char LM shape this module knows how to rebuild."""


def _init(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _attr(node: onnx.NodeProto, name: str):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def read_lstm_lm(model: onnx.ModelProto) -> dict:
    """The weights and state names of an exported LSTM char LM.

    state_in/state_out: (h, c) names; embed [V, E]; layers: (W [4H, In], R [4H, H], bias [4H]) in ONNX gate
    order i, o, f, c; head_w [H, V] and head_b [V].
    """
    w, nodes = _init(model), model.graph.node
    embeds = [n for n in nodes if n.op_type == "Gather" and n.input[0] in w and n.input[1] == artifact.TOKENS]
    lstms = [n for n in nodes if n.op_type == "LSTM"]
    heads = [n for n in nodes if n.op_type == "MatMul" and n.input[1] in w]
    biases = [n for n in nodes if n.op_type == "Add" and n.output[0] == artifact.LOGITS]
    if len(embeds) != 1 or not lstms or len(heads) != 1 or len(biases) != 1:
        raise UnsupportedGraphError("expected one embedding Gather, LSTM nodes, one head MatMul and the logits Add")
    layers = []
    for n in lstms:
        if (_attr(n, "direction") or b"forward") != b"forward" or (len(n.input) > 7 and n.input[7]) \
                or _attr(n, "clip") is not None or _attr(n, "activations") is not None:
            raise UnsupportedGraphError(f"LSTM node {n.name!r}: only forward unclipped LSTMs, default activations, no peepholes")
        W, R = w[n.input[1]][0], w[n.input[2]][0]
        four_h = W.shape[0]
        B = w[n.input[3]][0] if len(n.input) > 3 and n.input[3] else np.zeros(2 * four_h, np.float32)
        layers.append((W, R, B[:four_h] + B[four_h:]))
    bias_name = next(i for i in biases[0].input if i in w)
    producer = {o: n for n in nodes for o in n.output}
    state_in = [producer[lstms[0].input[k]].input[0] for k in (5, 6)]  # h0, c0: sliced per layer from graph inputs
    consumer = {i: n for n in nodes for i in n.input}
    state_out = [consumer[lstms[-1].output[k]].output[0] for k in (1, 2)]  # hn, cn: concatenated over layers
    return {"state_in": state_in, "state_out": state_out, "embed": w[embeds[0].input[0]], "layers": layers,
            "head_w": w[heads[0].input[1]], "head_b": w[bias_name]}


def _quantize_weight(wt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[K, N] fp32 -> (int8 [K, N], per-column scale [N]), symmetric, W_QMAX levels each side."""
    scale = np.maximum(np.abs(wt).max(axis=0), 1e-12) / W_QMAX
    return np.clip(np.round(wt / scale), -W_QMAX, W_QMAX).astype(np.int8), scale.astype(np.float32)


class _Builder:
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

    def qmatmul(self, x: str, wt: np.ndarray, bias: np.ndarray | None, hint: str, consts: _Builder) -> str:
        """x [..., K] fp32 in (-1, 1) @ wt [K, N] (+ bias), int8 with fixed activation scale; constants go in `consts`.

        MatMulIntegerToFloat (ONNX Runtime's contrib op) multiplies, scales and adds the bias in one kernel.
        """
        wq, w_scale = _quantize_weight(wt)
        h_scale = consts.const(f"{hint}_h_scale", np.array(H_SCALE, np.float32))
        h_zero = consts.const(f"{hint}_h_zero", np.array(H_ZERO, np.uint8))
        xq = self.op("QuantizeLinear", [x, h_scale, h_zero])[0]
        inputs = [xq, consts.const(f"{hint}_wq", wq), h_scale, consts.const(f"{hint}_w_scale", w_scale), h_zero,
                  consts.const(f"{hint}_w_zero", np.zeros(wq.shape[1], np.int8))]
        if bias is not None:
            inputs.append(consts.const(f"{hint}_bias", bias.astype(np.float32)))
        return self.op("MatMulIntegerToFloat", inputs, domain="com.microsoft")[0]


def _cell(b: _Builder, gates: str, c: str, split: str) -> tuple[str, str]:
    """ONNX LSTM gate order i, o, f, c: c' = f * c + i * tanh(g), h' = o * tanh(c'); one Sigmoid for i, o, f."""
    iof, g = b.op("Split", [gates, split], n_out=2, axis=-1)
    i, o, f = b.op("Split", [b.op("Sigmoid", [iof])[0]], n_out=3, axis=-1)
    c_new = b.op("Add", [b.op("Mul", [f, c])[0], b.op("Mul", [i, b.op("Tanh", [g])[0]])[0]])[0]
    return b.op("Mul", [o, b.op("Tanh", [c_new])[0]])[0], c_new


def _step(b: _Builder, consts: _Builder, x: str, hs: list[str], cs: list[str], layers: list) -> tuple[list, list]:
    """One character through every layer: x is the first layer's input projection (B, 4H); new (h, c) per layer."""
    H = layers[0][1].shape[1]
    split = consts.const("split_iof_g", np.array([3 * H, H], np.int64))
    new_h: list[str] = []
    new_c: list[str] = []
    for k, (W, R, bias) in enumerate(layers):
        if k == 0:
            gates = b.op("Add", [x, b.qmatmul(hs[0], R.T, None, "r0", consts)])[0]
        else:  # [h below, h] @ [W; R]: one GEMM for the layer's input and recurrent projections
            hc = b.op("Concat", [new_h[-1], hs[k]], axis=-1)[0]
            gates = b.qmatmul(hc, np.concatenate([W.T, R.T]), bias, f"wr{k}", consts)
        h, c = _cell(b, gates, cs[k], split)
        new_h.append(h)
        new_c.append(c)
    return new_h, new_c


def _values(names: list[str], elem: int = TensorProto.FLOAT) -> list[onnx.ValueInfoProto]:
    return [helper.make_tensor_value_info(n, elem, None) for n in names]


def _one_step_branch(g: _Builder, xproj_t: str, h0: list[str], c0: list[str], layers: list) -> onnx.GraphProto:
    """T = 1 (every decode step): the step without a Loop, whose per-iteration bookkeeping costs as much as a layer."""
    b = _Builder("one_step")
    axis0 = g.const("axis0", np.array([0], np.int64))
    new_h, new_c = _step(b, g, b.op("Squeeze", [xproj_t, axis0])[0], h0, c0, layers)
    top = b.op("Unsqueeze", [new_h[-1], axis0])[0]  # (1, B, H)
    outs = [b.op("Identity", [v])[0] for v in new_h + new_c] + [top]
    return helper.make_graph(b.nodes, "one_step", [], _values(outs))


def _loop_branch(g: _Builder, xproj_t: str, steps: str, h0: list[str], c0: list[str], layers: list) -> onnx.GraphProto:
    """T > 1 (a prompt's prefill): a Loop over time carrying (h, c) per layer, scanning out the top layer's h."""
    n_layer, b = len(layers), _Builder("loop_body")
    hs, cs = [f"h{k}_in" for k in range(n_layer)], [f"c{k}_in" for k in range(n_layer)]
    x = b.op("Gather", [xproj_t, "t"], axis=0)[0]  # (B, 4H): this step's first-layer input projection
    new_h, new_c = _step(b, g, x, hs, cs, layers)
    outs = [b.op("Identity", ["cond_in"])[0], *new_h, *new_c, b.op("Identity", [new_h[-1]])[0]]
    body = helper.make_graph(b.nodes, "lstm_step",
                             [helper.make_tensor_value_info("t", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), *_values(hs + cs)],
                             [helper.make_tensor_value_info(outs[0], TensorProto.BOOL, []), *_values(outs[1:])])
    loop = _Builder("loop")
    results = loop.op("Loop", [steps, "", *h0, *c0], n_out=2 * n_layer + 1, body=body)
    return helper.make_graph(loop.nodes, "loop", [], _values(results))


def build(fp32: onnx.ModelProto) -> onnx.ModelProto:
    """The int8 graph of an exported LSTM char LM (read_lstm_lm's shape), same inputs, outputs and dynamic axes."""
    p = read_lstm_lm(fp32)
    (h_in, c_in), (h_out, c_out) = p["state_in"], p["state_out"]
    layers, n_layer = p["layers"], len(p["layers"])
    H, V = layers[0][1].shape[1], p["head_w"].shape[1]
    g = _Builder("main")  # the main graph; its initializers also hold the branches' constants

    W0, _, b0 = layers[0]
    table = (p["embed"].astype(np.float64) @ W0.T.astype(np.float64) + b0).astype(np.float32)  # (V, 4H)
    xproj = g.op("Gather", [g.const("input_projection", table), artifact.TOKENS])[0]  # (B, T, 4H)
    xproj_t = g.op("Transpose", [xproj], perm=[1, 0, 2])[0]  # (T, B, 4H)
    steps = g.op("Gather", [g.op("Shape", [artifact.TOKENS])[0], g.const("time_axis", np.array(1, np.int64))], axis=0)[0]
    h0 = [g.op("Gather", [h_in, g.const(f"layer{k}", np.array(k, np.int64))], axis=0)[0] for k in range(n_layer)]
    c0 = [g.op("Gather", [c_in, g.const(f"layer{k}", np.array(k, np.int64))], axis=0)[0] for k in range(n_layer)]
    one = g.op("Equal", [steps, g.const("one", np.array(1, np.int64))])[0]
    results = g.op("If", [one], n_out=2 * n_layer + 1, then_branch=_one_step_branch(g, xproj_t, h0, c0, layers),
                   else_branch=_loop_branch(g, xproj_t, steps, h0, c0, layers))
    h_n, c_n, tops = results[:n_layer], results[n_layer : 2 * n_layer], results[-1]  # tops (T, B, H)

    axis0 = g.const("axis0", np.array([0], np.int64))
    g.nodes.append(helper.make_node("Concat", [g.op("Unsqueeze", [h, axis0])[0] for h in h_n], [h_out], axis=0))
    g.nodes.append(helper.make_node("Concat", [g.op("Unsqueeze", [c, axis0])[0] for c in c_n], [c_out], axis=0))
    seq = g.op("Transpose", [tops], perm=[1, 0, 2])[0]  # (B, T, H)
    g.nodes.append(helper.make_node("Identity", [g.qmatmul(seq, p["head_w"], p["head_b"], "head", g)], [artifact.LOGITS]))

    f = TensorProto.FLOAT
    graph = helper.make_graph(
        g.nodes, "char_lm_int8",
        [helper.make_tensor_value_info(artifact.TOKENS, TensorProto.INT64, ["batch", "time"]),
         helper.make_tensor_value_info(h_in, f, [n_layer, "batch", H]),
         helper.make_tensor_value_info(c_in, f, [n_layer, "batch", H])],
        [helper.make_tensor_value_info(artifact.LOGITS, f, ["batch", "time", V]),
         helper.make_tensor_value_info(h_out, f, [n_layer, "batch", H]),
         helper.make_tensor_value_info(c_out, f, [n_layer, "batch", H])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="rnnserve", ir_version=fp32.ir_version)
    helper.set_model_props(model, {UNROLLED_CELL_KEY: "lstm"})
    onnx.checker.check_model(model)
    return model
