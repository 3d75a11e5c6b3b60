"""Learning-rate schedule: linear warmup, then cosine decay (Loshchilov & Hutter 2017, SGDR without restarts)."""

from __future__ import annotations

import math

from training.config import OptimConfig


def lr_at(step: int, max_steps: int, cfg: OptimConfig) -> float:
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.decay == "none":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))
