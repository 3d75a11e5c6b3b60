"""Summarise training runs (runs/<name>/log.jsonl + last.pt) as the README's results table.

Usage: python -m bench.training_results [runs/shakespeare-lstm ...]   (default: every run under runs/)
Each row: the final validation figure, the budget used (minutes of the run's clock: wall, or CPU
seconds / threads for "cpu" budgets), wall-clock minutes, characters or examples seen, median
throughput, and CPU cores in use (process CPU seconds per wall second, logged by the loop).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def summarise(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in rows if "val_loss" in r]
    steps = [r for r in rows if "rate" in r]
    last = evals[-1]
    budget = last.get("budget_min", last["elapsed_s"] / 60)
    out = {"run": run.name, "budget_min": round(budget, 2), "wall_min": round(last["elapsed_s"] / 60, 1),
           "steps": last["step"], "median_rate_per_s": round(statistics.median(r["rate"] for r in steps)),
           "median_cores": round(statistics.median(r.get("cores", 0.0) for r in steps), 2)}
    if (run / "last.pt").exists():
        import torch

        out["seen"] = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["seen"]
    if "val_bpc" in last:
        out.update(val_loss_nats=round(last["val_loss"], 4), val_bpc=round(last["val_bpc"], 4))
        for mark in (5, 10, 20, 30):
            within = [r["val_loss"] for r in evals if r.get("budget_min", r["elapsed_s"] / 60) <= mark + 0.05]
            if within and budget >= mark - 0.05:
                out[f"best_val_loss_within_{mark}min"] = round(min(within), 4)
    else:
        out.update(val_accuracy=round(last["val_accuracy"], 4), val_loss=round(last["val_loss"], 4),
                   best_val_accuracy=round(max(r["val_accuracy"] for r in evals), 4))
    return out


def main(argv: list[str]) -> None:
    runs = [Path(a) for a in argv] or sorted(p.parent for p in Path("runs").glob("*/log.jsonl"))
    if not runs:
        sys.exit("no runs found: train with `make model-<recipe>` first")
    for run in runs:
        print(json.dumps(summarise(run)))


if __name__ == "__main__":
    main(sys.argv[1:])
