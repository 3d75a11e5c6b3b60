"""The training loop shared by every task: warmup + cosine LR, global-norm clipping, periodic
validation and samples, atomic checkpoints with everything needed for an exact resume.

Under torchrun the same loop runs on every rank (training/distributed.py): each rank reads its share of the
global batch, DDP averages the gradients, and rank 0 alone logs, evaluates, samples and saves."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from training.checkpoint import config_of, load_checkpoint, save_checkpoint
from training.config import OptimConfig, TrainConfig
from training.distributed import SINGLE, World
from training.schedule import lr_at
from training.tasks import make_task


def make_optimizer(cfg: OptimConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.name == "adagrad":  # min-char-rnn's choice: per-parameter step sizes from summed squared gradients
        return torch.optim.Adagrad(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Decay weights but not biases or embeddings' scale-free vectors (nanoGPT's split: 2-D weights only).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def train(cfg: TrainConfig | None = None, resume: str | Path | None = None, progress: bool = True,
          world: World = SINGLE) -> dict[str, Any]:
    """Train from cfg, or continue the checkpoint `resume` exactly where it stopped (with any number of ranks).
    Returns the last checkpoint (on ranks > 0: what rank 0 saved, less the metrics only rank 0 computes)."""
    ckpt = load_checkpoint(resume) if resume else None
    if ckpt is not None:
        cfg = config_of(ckpt) if cfg is None else cfg
    assert cfg is not None, "train() needs a config or a checkpoint to resume"
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    task = make_task(cfg, ckpt)  # the same initial weights on every rank: the same seed
    task.shard(world)
    model = task.model
    opt = make_optimizer(cfg.optim, model)
    step, prior_s, prior_cpu, seen, metrics = 0, 0.0, 0.0, 0, {}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        task.load_state_dict(ckpt["task"])
        torch.set_rng_state(ckpt["torch_rng"])
        step, prior_s, seen, metrics = ckpt["step"], ckpt["elapsed_s"], ckpt["seen"], ckpt["metrics"]
        prior_cpu = ckpt["cpu_s"]
    # The lowest validation loss so far; its checkpoint is kept as best.pt beside last.pt (a run that overfits
    # late can then be exported from its best evaluation: `training export runs/NAME/best.pt`).
    best_loss = ckpt.get("best_loss", math.inf) if ckpt is not None else math.inf
    net = world.wrap(model)  # what the forward runs through; `model` is what is evaluated and saved
    out_dir = Path(cfg.out_dir)
    log = None
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        log = (out_dir / "log.jsonl").open("a")

    def write(record: dict[str, Any]) -> None:
        if log is not None:
            log.write(json.dumps(record) + "\n")

    run_start, cpu_start = time.perf_counter(), time.process_time()

    def elapsed() -> float:
        """Wall-clock training time, evaluation and sampling included, summed over resumed runs."""
        return prior_s + time.perf_counter() - run_start

    def cpu_seconds() -> float:
        """CPU seconds this process spent training (all threads), summed over resumed runs."""
        return prior_cpu + time.process_time() - cpu_start

    def budget_used() -> float:
        """Minutes of the time budget spent. On the "cpu" clock a minute is `budget_cores` (default: `threads`)
        CPU-minutes of this process, so a budget means the same work on a machine shared with other processes.
        Ranks use rank 0's (World.agree)."""
        return elapsed() / 60 if cfg.time_budget_clock == "wall" else cpu_seconds() / 60 / (cfg.budget_cores or cfg.threads)

    def snapshot() -> dict[str, Any]:
        """Everything an exact resume needs, as of this step."""
        return {"config": asdict(cfg), "model_derived": task.derived, "tokenizer": task.tok.to_dict(),
             "model": model.state_dict(), "optimizer": opt.state_dict(), "task": task.state_dict(),
             "torch_rng": torch.get_rng_state(), "step": step, "elapsed_s": elapsed(), "cpu_s": cpu_seconds(), "seen": seen,
             "metrics": metrics, "best_loss": best_loss, "data": task.data_info, "torch_version": str(torch.__version__)}

    def checkpoint() -> dict[str, Any]:
        c = snapshot()
        if world.is_main:
            save_checkpoint(out_dir / "last.pt", c)
        return c

    model.train()
    bar = tqdm(total=cfg.max_steps, initial=step, unit="step", disable=not (progress and world.is_main),
               dynamic_ncols=True, desc=cfg.name)
    window_t, window_cpu, window_units = time.perf_counter(), time.process_time(), 0
    ckpt_out: dict[str, Any] = ckpt or {}
    _, _, used = world.agree(0.0, 0, budget_used())

    def fraction_done() -> float:
        """Fraction of the run done: by steps, or by the (agreed) clock when a time budget is set, whichever
        is further."""
        done = step / cfg.max_steps
        return max(done, used / cfg.time_budget_min) if cfg.time_budget_min > 0 else done

    # The loop ends on the very check that made its step the last one: checking the clock again at the
    # top could end the run on a step that was not logged, evaluated or checkpointed as the last.
    last = fraction_done() >= 1  # a resumed run that had finished runs no step
    while not last:
        lr = lr_at(step, fraction_done(), cfg.optim)
        for group in opt.param_groups:
            group["lr"] = lr
        world.reseed(cfg.seed, step)
        share, units = task.train_step(net)
        # The ranks' shares sum to the global batch's mean loss, and DDP averages their gradients: hence x ranks.
        (share * world.size).backward()
        # Clip by global norm (Pascanu et al. 2013): rescale the whole gradient when its norm explodes.
        # On several ranks this is the norm of the averaged gradient, the same on every rank.
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or math.inf).item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss, units, used = world.agree(share.item(), units, budget_used())
        step, seen, window_units = step + 1, seen + units, window_units + units
        bar.update(1)
        last = fraction_done() >= 1
        if step % cfg.log_interval == 0 or last:
            wall = max(1e-9, time.perf_counter() - window_t)
            # CPU seconds per wall second of this process: ~2.0 means both cores were busy training.
            rate, cores = window_units / wall, (time.process_time() - window_cpu) / wall
            window_t, window_cpu, window_units = time.perf_counter(), time.process_time(), 0
            bar.set_postfix(loss=f"{loss:.3f}", gnorm=f"{norm:.2f}", lr=f"{lr:.2e}", cores=f"{cores:.1f}",
                            **{f"{task.unit}s/s": f"{rate:,.0f}"})
            write({"step": step, "loss": loss, "grad_norm": norm, "lr": lr, "rate": rate, "cores": cores,
                   "elapsed_s": elapsed(), "budget_min": used})
        # Ranks > 0 go on to the next step and wait in its gradient all-reduce while rank 0 evaluates.
        if world.is_main and (step % cfg.eval_interval == 0 or last):
            metrics = task.evaluate()
            shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
            bar.write(f"step {step}: {shown} ({elapsed() / 60:.1f} min)")
            write({"step": step, "elapsed_s": elapsed(), "budget_min": used, **metrics})
            # One process only: a snapshot gathers every rank's data position, and the other ranks are not here.
            if world.size == 1 and metrics.get("val_loss", math.inf) < best_loss:
                best_loss = metrics["val_loss"]
                save_checkpoint(out_dir / "best.pt", snapshot())
        if log is not None:
            log.flush()
        if world.is_main and cfg.sample_interval and step % cfg.sample_interval == 0 and task.unit == "char":
            bar.write(f"----- sample at step {step}\n{task.sample(seed=step)}\n-----")
        if step % cfg.checkpoint_interval == 0 or last:
            ckpt_out = checkpoint()
    bar.close()
    if log is not None:
        log.close()
    world.barrier()  # when train() returns on any rank, rank 0's last checkpoint is on disk
    return ckpt_out
