"""The decode step's intra-op threads by batch size: one session per thread count, each call on its band's.

A second thread costs a hand-off per call: at batch 1 it can lose, at batch 64 it wins (measured on
a quiet machine; on a busy one a second thread has no core). So the policy is a list of bands,
"from batch B on, use T threads", read from the `decode_threads_by_batch` setting or from meta.json
runtime.intra_op_threads_by_batch (recorded where it was measured); --intra-op-threads pins one count.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from service.models.runners import LMRunner

MAX_THREADS = 256


@dataclass(frozen=True)
class ThreadPolicy:
    """Bands (from_batch, threads), from_batch ascending and starting at 1."""

    bands: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        starts = [b for b, _ in self.bands]
        if not self.bands or starts[0] != 1 or starts != sorted(set(starts)):
            raise ValueError(f"thread bands must start at batch 1 and ascend, got {list(self.bands)}")
        if not all(type(t) is int and 0 < t <= MAX_THREADS for _, t in self.bands):
            raise ValueError(f"thread counts must be integers from 1 to {MAX_THREADS}, got {list(self.bands)}")

    @classmethod
    def parse(cls, text: str, field: str = "decode_threads_by_batch") -> ThreadPolicy:
        """"1:1,16:2" -> batches 1-15 on 1 thread, 16 and up on 2; ValueError naming the field."""
        try:
            bands = tuple((int(b), int(t)) for b, t in (part.split(":") for part in text.split(",")))
            return cls(bands)
        except ValueError as err:
            raise ValueError(f"setting {field} must look like '1:1,16:2' (from batch : threads, ...): {err}") from None

    @classmethod
    def from_runtime(cls, runtime: Mapping[str, Any]) -> ThreadPolicy | None:
        """meta.json runtime.intra_op_threads_by_batch ({"1": 1, "16": 2}), or None when it records none."""
        recorded = runtime.get("intra_op_threads_by_batch")
        if recorded is None:
            return None
        if not isinstance(recorded, dict):
            raise ValueError("meta.json runtime.intra_op_threads_by_batch must map from-batch to threads")
        try:
            return cls(tuple(sorted((int(b), t) for b, t in recorded.items())))
        except ValueError as err:
            raise ValueError(f"meta.json runtime.intra_op_threads_by_batch: {err}") from None

    def threads(self, batch: int) -> int:
        return self.bands[max(0, bisect.bisect_right([b for b, _ in self.bands], batch) - 1)][1]


class BandedRunner:
    """An LMRunner per thread count of the policy; run() goes to the one of the batch's band, the rest delegates."""

    def __init__(self, policy: ThreadPolicy, make: Callable[[int], LMRunner]) -> None:
        self.policy = policy
        self.by_threads = {t: make(t) for t in sorted({t for _, t in policy.bands})}
        self.starts = [b for b, _ in policy.bands]
        self.runners = [self.by_threads[t] for _, t in policy.bands]
        self.default = self.runners[0]

    def runner_for(self, batch: int) -> LMRunner:
        return self.runners[max(0, bisect.bisect_right(self.starts, batch) - 1)]

    def run(self, tokens: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        return self.runner_for(tokens.shape[0]).run(tokens, state)

    def prefill(self, tokens: np.ndarray, state: list[np.ndarray]) -> list[np.ndarray]:
        return self.runner_for(tokens.shape[0]).prefill(tokens, state)

    def __getattr__(self, name: str) -> Any:  # specs, vocab_size, zero_state, self_check, sess ...
        return getattr(self.default, name)


def decode_policy(setting: str, pinned_threads: int, runtime: Mapping[str, Any]) -> ThreadPolicy | None:
    """The policy in force: a pinned count wins, then the setting, then what meta.json recorded; None: one session."""
    if pinned_threads:
        return None
    if setting:
        return ThreadPolicy.parse(setting)
    return ThreadPolicy.from_runtime(runtime)
