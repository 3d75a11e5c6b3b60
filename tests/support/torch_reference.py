"""What Trace must equal: per-step states of a torch CharLM from the model's own forward, and its gates from
PyTorch's documented nn.LSTM / nn.GRU equations on its own weights (torch's gate order, not ONNX's)."""

from __future__ import annotations

import numpy as np
import torch

from training.model import CharLM


def torch_activations(model: CharLM, ids: np.ndarray) -> dict[str, np.ndarray]:
    """{quantity: (L, B, T, H)} for ids (B, T) read from the zero state; `candidate` is the LSTM's g_t."""
    cell, L = model.cfg.cell, model.cfg.n_layer
    B, T = ids.shape
    tokens = torch.as_tensor(ids)
    state = model.init_state(B)
    steps: dict[str, list] = {}
    with torch.no_grad():
        emb = model.embed(tokens)  # (B, T, E)
        for t in range(T):
            prev = state
            _, *state = model(tokens[:, t : t + 1], *state)  # the model's own step: new h (and c) of every layer
            for layer in range(L):
                x = emb[:, t] if layer == 0 else state[0][layer - 1]
                h = prev[0][layer]
                W_ih, W_hh = getattr(model.rnn, f"weight_ih_l{layer}"), getattr(model.rnn, f"weight_hh_l{layer}")
                gi = x @ W_ih.T + getattr(model.rnn, f"bias_ih_l{layer}")
                gh = h @ W_hh.T + getattr(model.rnn, f"bias_hh_l{layer}")
                q = {"hidden": state[0][layer]}
                if cell == "lstm":  # i, f, g, o
                    i, f, g, o = (gi + gh).chunk(4, dim=1)
                    q.update(cell=state[1][layer], input_gate=torch.sigmoid(i), forget_gate=torch.sigmoid(f),
                             output_gate=torch.sigmoid(o), candidate=torch.tanh(g))
                elif cell == "gru":  # r, z, n
                    (ir, iz, _), (hr, hz, _) = gi.chunk(3, dim=1), gh.chunk(3, dim=1)
                    q.update(reset_gate=torch.sigmoid(ir + hr), update_gate=torch.sigmoid(iz + hz))
                for name, v in q.items():
                    steps.setdefault(name, []).append(v.numpy().copy())
    return {name: np.stack(v).reshape(T, L, B, -1).transpose(1, 2, 0, 3) for name, v in steps.items()}
