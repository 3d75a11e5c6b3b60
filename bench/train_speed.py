"""Training throughput of a char LM recipe on this CPU, side by side: precision, torch.compile, threads, batch shape.

Usage: python -m bench.train_speed [RECIPE ...] [--variants fp32,bf16,compile,compile-bf16] [--threads 1,2]
           [--shapes 64x100,128x100] [--steps 30] [--quality-steps 300] [--tiny]
Default recipes: recipes/shakespeare-lstm.json and recipes/shakespeare-gru.json (the bundled LSTM and GRU).

Every measurement is a full training step as the loop takes it (training/tasks.py's forward and backward
on the recipe's own corpus windows with carried state, global-norm clip, AdamW), after a warm-up (longer
for torch.compile, whose first calls compile). One JSON line per (recipe, variant, threads, shape):
characters per second, the ratio to fp32 eager at the same threads and shape, and CPU cores in use.
Then, per variant at the recipe's own shape and threads, a quality line: the same seed trained
--quality-steps steps, the mean training loss of the last tenth and the validation loss (fp32, first 20k
characters) -- equal characters seen, so a faster variant must not be worse. A variant that fails here
prints its error and the rest go on.

Variants: fp32 (eager, today's loop); bf16 (the recipe with "precision": "bf16", training/precision.py);
compile (torch.compile of the model); compile-bf16 (both). The CPU as torch sees it is printed first:
bfloat16 is fast only with AVX-512 BF16 or AMX; without them it is emulated, and oneDNN's LSTM refuses it.
"""

# ruff: noqa: I001  (training must be imported before torch)
from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import training  # noqa: F401  (first: sets passive OpenMP waiting before torch loads)
import numpy as np
import torch

from training.config import TrainConfig, load_config
from training.evaluate import evaluate_lm
from training.schedule import lr_at
from training.tasks import LMTask
from training.train import make_optimizer

VARIANTS = ("fp32", "bf16", "compile", "compile-bf16")
DEFAULT_RECIPES = ("recipes/shakespeare-lstm.json", "recipes/shakespeare-gru.json")
TINY = ["--model.n_layer=1", "--model.hidden_size=32", "--model.n_embd=16"]


def cpu_report() -> dict[str, Any]:
    flags = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return {"torch": torch.__version__, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_flags": [f for f in wanted if f in flags]}


class Run:
    """One recipe trained as the loop trains it (training/tasks.py's step, clip, AdamW), in one variant."""

    def __init__(self, cfg: TrainConfig, variant: str) -> None:
        torch.manual_seed(cfg.seed)
        self.cfg = replace(cfg, precision="bf16" if variant.endswith("bf16") else "fp32")
        self.task = LMTask(self.cfg)
        self.model = self.task.model  # the module itself: evaluated, and its parameters optimised
        self.opt = make_optimizer(cfg.optim, self.model)
        self.net = torch.compile(self.model) if variant.startswith("compile") else self.model  # what the forward runs through
        self.model.train()

    def step(self, lr: float) -> float:
        for group in self.opt.param_groups:
            group["lr"] = lr
        loss, _ = self.task.train_step(self.net)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip or math.inf)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


def speed(cfg: TrainConfig, variant: str, steps: int) -> dict[str, float]:
    run = Run(cfg, variant)
    for _ in range(10 if variant.startswith("compile") else 3):  # warm-up (compilation happens here)
        run.step(cfg.optim.lr)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        run.step(cfg.optim.lr)
    wall = time.perf_counter() - t0
    return {"chars_per_s": steps * cfg.batch_size * cfg.seq_len / wall, "cores": (time.process_time() - c0) / wall}


def quality(cfg: TrainConfig, variant: str, steps: int) -> dict[str, float]:
    """Train `steps` steps (warmup, then cosine to the floor, as the recipe's schedule) and report the losses."""
    run = Run(cfg, variant)
    losses = [run.step(lr_at(s, s / steps, cfg.optim)) for s in range(steps)]
    val = evaluate_lm(run.model, run.task.corpus.val[:20000], batch_size=16)["loss"]
    return {"train_loss_last_tenth": float(np.mean(losses[-max(1, steps // 10) :])), "val_loss_20k": val,
            "chars_seen": steps * cfg.batch_size * cfg.seq_len}


def _config(recipe: str, threads: int | None, shape: tuple[int, int] | None, tiny: bool) -> TrainConfig:
    over = [*([f"--threads={threads}"] if threads else []), *(TINY if tiny else [])]
    if shape:
        over += [f"--batch_size={shape[0]}", f"--seq_len={shape[1]}"]
    return load_config(recipe, over)


def _guarded(fn, *args) -> dict[str, Any]:
    try:
        return fn(*args)
    except Exception as err:  # a variant that does not run here is a finding, not the end of the bench
        return {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}",
                "where": traceback.extract_tb(err.__traceback__)[-1].name}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipes", nargs="*", default=list(DEFAULT_RECIPES))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", default="1,2")
    p.add_argument("--shapes", default="", help="BxT,... besides the recipe's own (e.g. 128x100,64x200)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    p.add_argument("--quality-steps", type=int, default=300, help="0 skips the quality runs")
    p.add_argument("--tiny", action="store_true", help="a 1x32 model, 3 steps: check that the bench runs")
    args = p.parse_args()
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    steps, q_steps = (3, min(args.quality_steps, 5)) if args.tiny else (args.steps, args.quality_steps)
    print(json.dumps(cpu_report()))
    for recipe in args.recipes:
        base = _config(recipe, None, None, args.tiny)
        shapes = [(base.batch_size, base.seq_len)] + [tuple(map(int, s.split("x"))) for s in args.shapes.split(",") if s]
        for threads in map(int, args.threads.split(",")):
            torch.set_num_threads(threads)
            for shape in shapes:
                cfg = _config(recipe, threads, shape, args.tiny)
                fp32 = None
                for variant in variants:
                    r = _guarded(speed, cfg, variant, steps)
                    if variant == "fp32" and "error" not in r:
                        fp32 = r["chars_per_s"]
                    if fp32 and "chars_per_s" in r:
                        r["vs_fp32"] = round(r["chars_per_s"] / fp32, 2)
                    print(json.dumps({"recipe": recipe, "variant": variant, "threads": threads, "B": shape[0],
                                      "T": shape[1], **{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}}),
                          flush=True)
        if q_steps:
            torch.set_num_threads(base.threads)
            for variant in variants:
                r = _guarded(quality, base, variant, q_steps)
                print(json.dumps({"recipe": recipe, "quality": variant, "threads": base.threads, "steps": q_steps,
                                  **{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}}), flush=True)


if __name__ == "__main__":
    main()
