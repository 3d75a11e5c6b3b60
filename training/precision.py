"""Training precision: "fp32", or "bf16" -- the forward pass under torch.autocast in bfloat16 on the CPU.

Autocast runs matmuls and recurrent cells in bfloat16 and keeps fp32 master weights, optimizer state,
loss and gradients' accumulation (Kalamkar et al. 2019, "A study of bfloat16 for deep learning training").
Evaluation, checkpoints and export stay fp32, so the exported graph is verified exactly as before.
It pays only on CPUs with native bfloat16 (AVX-512 BF16, AMX); elsewhere it is emulated, and oneDNN's
LSTM refuses it outright, which check() turns into a config error before training starts.
"""

from __future__ import annotations

import torch

PRECISIONS = ("fp32", "bf16", "auto")


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), as oneDNN reports it."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve(precision: str) -> str:
    """The precision a recipe runs at here: "auto" is bf16 where bfloat16 is native and fp32 elsewhere (where
    it would be emulated and slower), so one recipe is fast on both kinds of CPU."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16() else "fp32"


def autocast(precision: str) -> torch.autocast:
    """The context the forward pass runs in."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def check(model: torch.nn.Module, precision: str, example: tuple[torch.Tensor, ...]) -> None:
    """One forward pass at this precision; ValueError naming the precision if this CPU cannot run it."""
    if precision == "fp32":
        return
    was_training = model.training
    model.eval()  # no dropout: the check draws nothing from the RNG
    try:
        with torch.no_grad(), autocast(precision):
            model(*example)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[0][:200]
        raise ValueError(f"precision {precision!r} does not run this model on this CPU ({reason}); use 'fp32'") from None
    finally:
        model.train(was_training)
