"""What meta.json must say for each model kind, checked when it is read: one rule per kind, in RULES.

Training writes these fields and the service relies on them, so the rules are part of the artifact
contract (the server's side of a kind is in service/kinds/). A new kind adds its rule here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.artifact.meta import Meta


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


def _char_lm(meta: Meta) -> None:
    """A char LM's state is exactly what its cell carries at its sizes; it has no labels."""
    expected = state_specs(meta.cell, meta.sizes["n_layer"], meta.sizes["hidden_size"])
    if meta.state != expected:
        raise ValueError(f"meta.json state {[asdict(s) for s in meta.state]} is not what a {meta.cell} of these sizes "
                         f"carries: {[asdict(s) for s in expected]}")
    if meta.labels:
        raise ValueError("meta.json of a char_lm must not list labels")


def _classifier(meta: Meta) -> None:
    """A classifier carries no state between calls and names at least two labels, as many as sizes.n_class says."""
    if meta.state:
        raise ValueError("meta.json of a classifier must not list state tensors")
    if len(meta.labels) < 2:
        raise ValueError("meta.json of a classifier must list at least two labels")
    if meta.sizes.get("n_class", len(meta.labels)) != len(meta.labels):
        raise ValueError(f"meta.json sizes.n_class is {meta.sizes['n_class']!r:.40} but it lists "
                         f"{len(meta.labels)} labels")


RULES: dict[str, Callable[[Meta], None]] = {"char_lm": _char_lm, "classifier": _classifier}
KINDS = tuple(RULES)
