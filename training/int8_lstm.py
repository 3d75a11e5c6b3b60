"""An LSTM char LM's graph rebuilt with its cell written out as int8 MatMuls and fixed activation scales.

The frame, the quantization and why no calibration is needed are in int8_graph.py. This module reads the
ONNX LSTM nodes' weights (gate order i, o, f, c) and writes one character's step through every layer:
the first layer's input projection needs no GEMM at all (embedding @ W_ih^T + biases is folded into one
fp32 table looked up per character); each later layer's input and recurrent projections are one GEMM over
[h below, h]. The cell's elementwise ops stay fp32. int8_classifier.py reuses `cell` for the BiLSTM.
"""

from __future__ import annotations

import numpy as np
import onnx

from training.int8_graph import (
    Builder,
    CharLM,
    UnsupportedGraphError,
    char_lm,
    check_forward,
    initializers,
    read_head,
    state_names,
)


def read_lstm_layers(node: onnx.NodeProto, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One forward LSTM node's (W [4H, In], R [4H, H], bias [4H]) in ONNX gate order i, o, f, c; no peepholes."""
    check_forward(node)
    if len(node.input) > 7 and node.input[7]:
        raise UnsupportedGraphError(f"LSTM node {node.name!r}: peepholes are not supported")
    W, R = w[node.input[1]][0], w[node.input[2]][0]
    four_h = W.shape[0]
    B = w[node.input[3]][0] if len(node.input) > 3 and node.input[3] else np.zeros(2 * four_h, np.float32)
    return W, R, B[:four_h] + B[four_h:]


def cell(b: Builder, gates: str, c: str, split: str) -> tuple[str, str]:
    """ONNX LSTM gate order i, o, f, c: c' = f * c + i * tanh(g), h' = o * tanh(c'); one Sigmoid for i, o, f."""
    iof, g = b.op("Split", [gates, split], n_out=2, axis=-1)
    i, o, f = b.op("Split", [b.op("Sigmoid", [iof])[0]], n_out=3, axis=-1)
    c_new = b.op("Add", [b.op("Mul", [f, c])[0], b.op("Mul", [i, b.op("Tanh", [g])[0]])[0]])[0]
    return b.op("Mul", [o, b.op("Tanh", [c_new])[0]])[0], c_new


def split_iof_g(consts: Builder, hidden_size: int) -> str:
    return consts.const("split_iof_g", np.array([3 * hidden_size, hidden_size], np.int64))


def _stepper(layers: list):
    def step(b: Builder, consts: Builder, x: str, state: list[list[str]]) -> list[list[str]]:
        """x is the first layer's input projection (B, 4H); state is [h per layer, c per layer]."""
        (hs, cs), split = state, split_iof_g(consts, layers[0][1].shape[1])
        new_h: list[str] = []
        new_c: list[str] = []
        for k, (W, R, bias) in enumerate(layers):
            if k == 0:
                gates = b.op("Add", [x, b.qmatmul(hs[0], R.T, None, "r0", consts)])[0]
            else:  # [h below, h] @ [W; R]: one GEMM for the layer's input and recurrent projections
                hc = b.op("Concat", [new_h[-1], hs[k]], axis=-1)[0]
                gates = b.qmatmul(hc, np.concatenate([W.T, R.T]), bias, f"wr{k}", consts)
            h, c = cell(b, gates, cs[k], split)
            new_h.append(h)
            new_c.append(c)
        return [new_h, new_c]

    return step


def read_lstm_lm(model: onnx.ModelProto) -> CharLM:
    """An exported LSTM char LM (embedding Gather, forward LSTM nodes, head MatMul + Add) as the int8 frame's input."""
    w = initializers(model)
    lstms = [n for n in model.graph.node if n.op_type == "LSTM"]
    if not lstms:
        raise UnsupportedGraphError("expected LSTM nodes (a static int8 char LM is an LSTM or a GRU)")
    embed, head_w, head_b = read_head(model, w)
    layers = [read_lstm_layers(n, w) for n in lstms]
    state_in, state_out = state_names(model, lstms[0], lstms[-1], (5, 6), (1, 2))  # (h0, c0) -> (hn, cn)
    W0, R0, b0 = layers[0]
    table = (embed.astype(np.float64) @ W0.T.astype(np.float64) + b0).astype(np.float32)  # (V, 4H)
    return CharLM(cell="lstm", n_layer=len(layers), hidden_size=R0.shape[1], input_table=table,
                  state_in=state_in, state_out=state_out,
                  head_w=head_w, head_b=head_b, step=_stepper(layers))


def build(fp32: onnx.ModelProto) -> onnx.ModelProto:
    """The int8 graph of an exported LSTM char LM, same inputs, outputs and dynamic axes."""
    return char_lm(read_lstm_lm(fp32), fp32.ir_version)
