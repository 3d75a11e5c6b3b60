"""A GRU char LM's graph rebuilt with its cell written out as int8 MatMuls and fixed activation scales.

The frame, the quantization and why no calibration is needed are in int8_graph.py. The ONNX GRU node that
torch exports has gate order z, r, h and linear_before_reset = 1 (Cho et al. 2014 as cuDNN computes it):

    z = sigmoid(W_z x + R_z h + b_z)          r = sigmoid(W_r x + R_r h + b_r)
    n = tanh(W_h x + Wb_h + r * (R_h h + Rb_h))
    h' = (1 - z) * n + z * h = n + z * (h - n)

r scales the recurrent half of the candidate only, so the candidate's input and recurrent projections stay
apart. The first layer's input projection is a table looked up per character (embedding @ W^T + biases);
its recurrent projection is one GEMM. A later layer's two projections are one GEMM over [h below, h] whose
weight holds both halves of the candidate side by side: [[W_zr, W_h, 0], [R_zr, 0, R_h]] (In + H, 4H).
"""

from __future__ import annotations

import numpy as np
import onnx

from training.int8_graph import (
    Builder,
    CharLM,
    UnsupportedGraphError,
    attr,
    char_lm,
    check_forward,
    initializers,
    read_head,
    state_names,
)


def _read_layer(node: onnx.NodeProto, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(W [3H, In], R [3H, H], Wb [3H], Rb [3H]) of one forward GRU node, gate order z, r, h."""
    check_forward(node)
    if attr(node, "linear_before_reset") != 1:
        raise UnsupportedGraphError(f"GRU node {node.name!r}: only linear_before_reset = 1 (what torch exports)")
    W, R = w[node.input[1]][0], w[node.input[2]][0]
    three_h = W.shape[0]
    B = w[node.input[3]][0] if len(node.input) > 3 and node.input[3] else np.zeros(2 * three_h, np.float32)
    return W, R, B[:three_h], B[three_h:]


def _cell(b: Builder, zr: str, nx: str, nh: str, h: str) -> str:
    """z, r from zr's pre-activations; n = tanh(nx + r * nh); h' = n + z * (h - n)."""
    z, r = b.op("Split", [b.op("Sigmoid", [zr])[0]], n_out=2, axis=-1)
    n = b.op("Tanh", [b.op("Add", [nx, b.op("Mul", [r, nh])[0]])[0]])[0]
    return b.op("Add", [n, b.op("Mul", [z, b.op("Sub", [h, n])[0]])[0]])[0]


def _stepper(layers: list):
    H = layers[0][1].shape[1]

    def step(b: Builder, consts: Builder, x: str, state: list[list[str]]) -> list[list[str]]:
        """x is the first layer's input projection (B, 3H), z and r biases folded in; state is [h per layer]."""
        (hs,) = state
        split_zr_n = consts.const("split_zr_n", np.array([2 * H, H], np.int64))
        new_h: list[str] = []
        for k, (W, R, Wb, Rb) in enumerate(layers):
            if k == 0:
                rec_bias = np.concatenate([np.zeros(2 * H, np.float32), Rb[2 * H :]])
                x_zr, nx = b.op("Split", [x, split_zr_n], n_out=2, axis=-1)
                h_zr, nh = b.op("Split", [b.qmatmul(hs[0], R.T, rec_bias, "r0", consts), split_zr_n], n_out=2, axis=-1)
                zr = b.op("Add", [x_zr, h_zr])[0]
            else:
                In = W.shape[1]
                both = np.zeros((In + H, 4 * H), np.float32)
                both[:In, : 3 * H], both[In:, : 2 * H], both[In:, 3 * H :] = W.T, R[: 2 * H].T, R[2 * H :].T
                bias = np.concatenate([Wb[: 2 * H] + Rb[: 2 * H], Wb[2 * H :], Rb[2 * H :]])
                hc = b.op("Concat", [new_h[-1], hs[k]], axis=-1)[0]
                split = consts.const("split_zr_nx_nh", np.array([2 * H, H, H], np.int64))
                zr, nx, nh = b.op("Split", [b.qmatmul(hc, both, bias, f"wr{k}", consts), split], n_out=3, axis=-1)
            new_h.append(_cell(b, zr, nx, nh, hs[k]))
        return [new_h]

    return step


def read_gru_lm(model: onnx.ModelProto) -> CharLM:
    """An exported GRU char LM (embedding Gather, forward GRU nodes, head MatMul + Add) as the int8 frame's input."""
    w = initializers(model)
    grus = [n for n in model.graph.node if n.op_type == "GRU"]
    if not grus:
        raise UnsupportedGraphError("expected GRU nodes")
    embed, head_w, head_b = read_head(model, w)
    layers = [_read_layer(n, w) for n in grus]
    state_in, state_out = state_names(model, grus[0], grus[-1], (5,), (1,))  # h0 -> hn
    W0, R0, Wb0, Rb0 = layers[0]
    H = R0.shape[1]
    bias = np.concatenate([Wb0[: 2 * H] + Rb0[: 2 * H], Wb0[2 * H :]])  # Rb_h stays inside r * (...)
    table = (embed.astype(np.float64) @ W0.T.astype(np.float64) + bias).astype(np.float32)  # (V, 3H)
    return CharLM(cell="gru", n_layer=len(layers), hidden_size=H, input_table=table,
                  state_in=state_in, state_out=state_out,
                  head_w=head_w, head_b=head_b, step=_stepper(layers))


def build(fp32: onnx.ModelProto) -> onnx.ModelProto:
    """The int8 graph of an exported GRU char LM, same inputs, outputs and dynamic axes."""
    return char_lm(read_gru_lm(fp32), fp32.ir_version)
