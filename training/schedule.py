"""Learning-rate schedule: linear warmup, then cosine decay (Loshchilov & Hutter 2017, SGDR without restarts)."""

from __future__ import annotations

import math

from training.config import OptimConfig


def lr_at(step: int, progress: float, cfg: OptimConfig) -> float:
    """LR at `step`, where `progress` in [0, 1] is the fraction of the run done (by steps or by time budget)."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.decay == "none":
        return cfg.lr
    progress = min(1.0, max(0.0, progress))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))
