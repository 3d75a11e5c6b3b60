"""Data-parallel scaling of training: chars/s of one process against N ranks, same recipe, same global batch,
same total cores.

Usage: python -m bench.ddp_scaling [recipes/shakespeare-lstm-5min.json] [--steps 60] [--ranks 2] [--cores 2] [--quick]

Runs the real command line twice, one after the other in one run: `python -m training train --threads=CORES`,
then `torchrun --standalone --nproc_per_node=RANKS -m training train --threads=CORES/RANKS`, each for a fixed
number of steps without a time budget. chars/s comes from rank 0's log between the end of the warm-up and the
last step: the all-reduces are in it; start-up, data loading, the final evaluation and checkpoint are not.
On one machine, ranks split the cores that one process's intra-op threads would share: the ratio says whether
data parallelism (smaller matrix products per rank, plus a gradient all-reduce per step) beats threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from training.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def run(recipe: str, ranks: int, threads: int, steps: int, warmup: int, out: Path) -> dict[str, float]:
    """Train `steps` steps on `ranks` processes of `threads` threads; chars/s after `warmup` steps, last loss."""
    launch = [sys.executable, "-m", "training"] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m", "training"]
    flags = [f"--threads={threads}", f"--max_steps={steps}", "--time_budget_min=0", "--log_interval=1",
             f"--eval_interval={steps}", f"--checkpoint_interval={steps}", "--sample_interval=0", f"--out_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([*launch, "train", "--config", recipe, "--quiet", *flags], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    cfg = load_config(recipe)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps_log = {r["step"]: r for r in log if "loss" in r}
    wall = steps_log[steps]["elapsed_s"] - steps_log[warmup]["elapsed_s"]
    return {"chars_per_s": (steps - warmup) * cfg.batch_size * cfg.seq_len / wall, "last_loss": steps_log[steps]["loss"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", nargs="?", default="recipes/shakespeare-lstm-5min.json")
    p.add_argument("--steps", type=int, default=60, help="steps of each run (the global batch each step)")
    p.add_argument("--warmup", type=int, default=10, help="steps not timed")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--cores", type=int, default=2, help="threads of the one process; each rank gets cores / ranks")
    p.add_argument("--quick", action="store_true", help="8 steps, 3 of them warm-up: checks that it runs")
    args = p.parse_args()
    steps, warmup = (8, 3) if args.quick else (args.steps, args.warmup)
    if not 0 < warmup < steps or args.cores % args.ranks:
        p.error("need 0 < warmup < steps, and cores divisible by ranks")
    with tempfile.TemporaryDirectory(prefix="ddp-scaling-") as tmp:
        one = run(args.recipe, 1, args.cores, steps, warmup, Path(tmp) / "one")
        many = run(args.recipe, args.ranks, args.cores // args.ranks, steps, warmup, Path(tmp) / "many")
    print(json.dumps({"recipe": args.recipe, "steps": steps, "timed_steps": steps - warmup, "cores": args.cores,
                      "chars_per_s_1_process": round(one["chars_per_s"]),
                      f"chars_per_s_{args.ranks}_ranks": round(many["chars_per_s"]),
                      "speedup": round(many["chars_per_s"] / one["chars_per_s"], 2),
                      "last_loss_1_process": round(one["last_loss"], 4),
                      f"last_loss_{args.ranks}_ranks": round(many["last_loss"], 4)}))


if __name__ == "__main__":
    main()
