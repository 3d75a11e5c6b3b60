"""Training throughput with 1 and 2 torch threads, side by side: does a recipe use both cores?

Usage: python -m bench.train_threads [recipes/shakespeare-lstm-5min.json] [--steps 20]
Times full training steps (forward, backward, AdamW) of the recipe's model at its batch shape on
random tokens, after a warm-up, and prints chars/s per thread count, their ratio, and the CPU
cores in use (process CPU seconds per wall second).
"""

# ruff: noqa: I001  (training must be imported before torch)
from __future__ import annotations

import argparse
import json
import time

import training  # noqa: F401  (first: sets passive OpenMP waiting before torch loads)
import torch
import torch.nn.functional as F

from training.config import load_config
from training.model import CharLM


def chars_per_s(recipe: str, threads: int, steps: int) -> tuple[float, float]:
    cfg = load_config(recipe)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = CharLM(cfg.model_config(vocab_size=66))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 66, (cfg.batch_size, cfg.seq_len))
    state = model.init_state(cfg.batch_size)
    for i in range(steps + 3):
        if i == 3:  # warm-up done
            t0, c0 = time.perf_counter(), time.process_time()
        logits, *_ = model(x, *state)
        F.cross_entropy(logits.flatten(0, 1), x.flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    wall = time.perf_counter() - t0
    return steps * x.numel() / wall, (time.process_time() - c0) / wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("recipe", nargs="?", default="recipes/shakespeare-lstm-5min.json")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    one, cores1 = chars_per_s(args.recipe, 1, args.steps)
    two, cores2 = chars_per_s(args.recipe, 2, args.steps)
    print(json.dumps({"recipe": args.recipe, "chars_per_s_1_thread": round(one), "chars_per_s_2_threads": round(two),
                      "speedup_2_over_1": round(two / one, 2), "cores_1_thread": round(cores1, 2),
                      "cores_2_threads": round(cores2, 2)}))


if __name__ == "__main__":
    main()
