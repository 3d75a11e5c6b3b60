"""python -m training gradients: the lecture's gradient story measured on rnnserve's own cells and data.

Four experiments, each a figure and a table (docs/gradients.md reads them):
1. distance: ‖∂L_t/∂s_{t-k}‖ vs k for rnn, lstm and gru at initialisation and after a short recipe run,
   with the vanilla RNN's per-step factor set against its W_hh and tanh' (and the NumPy min-char-rnn
   reference computing the same curve from the same weights);
2. scaled: vanilla RNNs whose W_hh has largest singular value 0.5, 1, 1.5, 3, before and after training;
3. clipping: the vanilla-RNN recipe with no clip, global-norm clip and min-char-rnn's per-entry clip,
   from torch's initialisation and from a W_hh whose gradients explode;
4. context: the loss on a character given only its last k characters, for the short runs and the
   bundled char LMs (read through their served ONNX graphs), against the loss given a long context.
Every run is seeded and uses one thread, so the same command writes the same numbers.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

import service.artifact as artifact
from service.artifact import Meta
from service.artifact.corpus import read_text
from service.artifact.tokenizer import Tokenizer
from training import gradients as g
from training.config import TrainConfig, load_config
from training.data import CharCorpus
from training.gradient_figures import figures, tables
from training.gradient_runs import CLIPS, Run, short_run, spikes
from training.model import CharLM

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"rnn": "shakespeare-rnn-5min.json", "lstm": "shakespeare-lstm-5min.json", "gru": "shakespeare-gru.json"}
# The equal-budget recipes at a size whose three runs take about a CPU-minute each on one thread.
SMALL = {"model.n_layer": 1, "model.hidden_size": 128, "batch_size": 32, "threads": 1, "time_budget_min": 0}
SIGMAS = (0.5, 1.0, 1.5, 3.0)
EXPLODING = 3.0  # the clipping runs are repeated from W_hh = EXPLODING * Q
SEED = 0  # text windows and scored positions


@dataclass(frozen=True)
class Plan:
    """How much of each experiment to run."""

    steps: int  # training steps of each short run (distance, clipping)
    scaled_steps: int  # training steps of each scaled-W_hh run
    windows: int  # text windows each gradient curve averages over
    distance: int  # the largest k measured
    burn_in: int  # characters read before the measured ones, so no curve starts from the zero state
    positions: int  # characters scored for each context length
    contexts: tuple[int, ...]  # truncated context lengths
    full_context: int  # the long context they are compared with
    val_chars: int  # validation characters scored after each run


FULL = Plan(steps=500, scaled_steps=200, windows=64, distance=300, burn_in=100, positions=1000,
            contexts=(1, 2, 4, 8, 16, 32, 48, 64, 96, 128), full_context=256, val_chars=20_000)
QUICK = Plan(steps=40, scaled_steps=30, windows=8, distance=60, burn_in=20, positions=64,
             contexts=(1, 2, 4, 8, 16, 32), full_context=64, val_chars=2_000)


def recipe(cell: str, data: Path) -> TrainConfig:
    overrides = {**SMALL, "data.path": str(data), "name": f"gradients-{cell}", "out_dir": f"runs/gradients-{cell}"}
    return load_config(ROOT / "recipes" / RECIPES[cell], [f"--{k}={v}" for k, v in overrides.items()])


def windows(ids: np.ndarray, plan: Plan) -> torch.Tensor:
    """plan.windows random windows of the validation text, long enough for burn-in, distance and target."""
    length = plan.burn_in + plan.distance + 2
    starts = np.random.default_rng(SEED).choice(len(ids) - length, plan.windows, replace=False)
    return torch.from_numpy(ids[starts[:, None] + np.arange(length)[None, :]])


def curve_summary(norms: np.ndarray) -> dict[str, Any]:
    """The mean curve over windows and the numbers the tables show."""
    curve = norms.mean(axis=0)
    return {"curve": curve.tolist(), "per_step_factor": g.per_step_factor(curve), "reach_1e-3": g.reach(curve)}


def distance_experiment(corpus: CharCorpus, data: Path, plan: Plan) -> tuple[dict[str, Any], dict[str, Run]]:
    """Each cell's recipe at its initialisation and after plan.steps; the trained runs are returned for reuse."""
    ids = windows(corpus.val, plan)
    out, runs = {}, {}
    for cell in RECIPES:
        cfg = recipe(cell, data)
        for phase, steps in (("init", 0), ("trained", plan.steps)):
            run = short_run(f"{cell}-{phase}", cfg, corpus, steps, "norm", plan.val_chars)
            norms = g.state_gradient_norms(run.model, ids, plan.burn_in)
            row = {"cell": cell, "phase": phase, "val_loss": run.val_loss, **curve_summary(norms)}
            if cell == "rnn":
                row["jacobian"] = g.rnn_jacobian_stats(run.model, ids, plan.burn_in)[0]
            if cell == "rnn" and phase == "trained":  # the NumPy reference on the same weights and windows
                ref = g.minchar_state_gradient_norms(g.to_minchar(run.model), ids.numpy(), plan.burn_in)
                out["minchar"] = {"curve": ref.mean(axis=0).tolist(), "max_rel_diff": float(np.abs(ref / norms - 1).max())}
            out[f"{cell}-{phase}"] = row
            runs[f"{cell}-{phase}"] = run
    return out, runs


def scaled_experiment(corpus: CharCorpus, data: Path, plan: Plan) -> dict[str, Any]:
    """Both families of scaled W_hh at init; the rescaled one (torch's init, only its size changed) also trained."""
    ids = windows(corpus.val, plan)
    cfg = recipe("rnn", data)
    out = {}
    for sigma in SIGMAS:
        for family in ("rescaled", "orthogonal"):
            prepare = partial(g.set_recurrent_scale_, sigma=sigma, orthogonal=family == "orthogonal")
            phases = (("init", 0), ("trained", plan.scaled_steps)) if family == "rescaled" else (("init", 0),)
            for phase, steps in phases:
                run = short_run(f"{family}-{sigma}-{phase}", cfg, corpus, steps, "norm", plan.val_chars, prepare)
                out[f"{family}-{sigma}-{phase}"] = {
                    "family": family, "sigma": sigma, "phase": phase, "val_loss": run.val_loss,
                    "losses": run.losses.tolist(), "grad_norms": run.grad_norms.tolist(),
                    "spikes_10x": spikes(run.grad_norms) if steps else 0, "clipped_steps": run.clipped,
                    "jacobian": g.rnn_jacobian_stats(run.model, ids, plan.burn_in)[0],
                    **curve_summary(g.state_gradient_norms(run.model, ids, plan.burn_in))}
    return out


def clipping_experiment(corpus: CharCorpus, data: Path, plan: Plan, norm_run: Run) -> dict[str, Any]:
    """The vanilla-RNN recipe trained with each clip, from torch's init and from W_hh = 3 Q.

    norm_run is the distance experiment's trained vanilla RNN: the recipe as it is (global-norm clip).
    From 3 Q the gradient grows with distance at initialisation (the scaled experiment measures it),
    so the second start shows what the clips do when gradients do explode.
    """
    cfg = recipe("rnn", data)
    starts = {"recipe": None, f"orthogonal-{EXPLODING}": partial(g.set_recurrent_scale_, sigma=EXPLODING, orthogonal=True)}
    tail = max(1, plan.steps // 10)
    out: dict[str, dict[str, Any]] = {}
    for start, prepare in starts.items():
        out[start] = {}
        for how in CLIPS:
            run = norm_run if prepare is None and how == "norm" else \
                short_run(f"{start}-{how}", cfg, corpus, plan.steps, how, plan.val_chars, prepare)
            out[start][how] = {
                "losses": run.losses.tolist(), "grad_norms": run.grad_norms.tolist(),
                "median_norm": float(np.median(run.grad_norms)), "max_norm": float(run.grad_norms.max()),
                "median_head_norm": float(np.median(run.head_norms)),
                "spikes_10x": spikes(run.grad_norms), "clipped_steps": run.clipped,
                "final_train_loss": float(run.losses[-tail:].mean()), "val_loss": run.val_loss}
    return out


def torch_predictor(model: CharLM) -> g.Predictor:
    model = model.eval()

    @torch.no_grad()
    def predict(ids: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(ids), *model.init_state(len(ids)))[0][:, -1].numpy()

    return predict


def onnx_predictor(version_dir: Path, meta: Meta) -> g.Predictor:
    """The served graph itself, one thread, every state input at zero."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(str(version_dir / artifact.MODEL_FILE), opts, providers=["CPUExecutionProvider"])

    def predict(ids: np.ndarray) -> np.ndarray:
        zero = {s.input: np.zeros((s.n_layer, len(ids), s.hidden_size), np.float32) for s in meta.state}
        return sess.run([artifact.LOGITS], {artifact.TOKENS: ids, **zero})[0][:, -1]

    return predict


def bundled_char_lms(models: Path) -> list[tuple[str, Path, Meta, Path]]:
    """(name, version dir, meta, its corpus) of every char LM under models/ whose training corpus is here to read."""
    found = []
    for meta_path in sorted(models.glob(f"*/*/{artifact.META_FILE}")):
        meta = Meta.load(meta_path)
        if meta.kind != "char_lm":
            continue
        corpus = ROOT / meta.training.get("config", {}).get("data", {}).get("path", "")  # recipes' paths: from the root
        if not corpus.is_file():
            print(f"context: skipping {meta_path.parent}: its corpus {corpus} is not here")
            continue
        found.append((meta_path.parent.parent.name, meta_path.parent, meta, corpus))
    return found


def context_row(name: str, predict: g.Predictor, ids: np.ndarray, plan: Plan) -> dict[str, Any]:
    positions = np.sort(np.random.default_rng(SEED).choice(np.arange(plan.full_context, len(ids)), plan.positions,
                                                           replace=False))
    losses = g.truncated_context_losses(predict, ids, positions, [*plan.contexts, plan.full_context])
    mean, se = g.context_cost(losses[:-1], losses[-1])
    return {"model": name, "full_loss": float(losses[-1].mean()), "cost": mean.tolist(), "se": se.tolist(),
            "longest_used": g.longest_used(list(plan.contexts), mean, se)}


def context_experiment(corpus: CharCorpus, runs: dict[str, Run], models: Path, plan: Plan) -> dict[str, Any]:
    rows = []
    for cell in RECIPES:
        label = f"{cell} (1x{SMALL['model.hidden_size']}, {plan.steps} steps)"
        rows.append(context_row(label, torch_predictor(runs[f"{cell}-trained"].model), corpus.val, plan))
    for name, version_dir, meta, path in bundled_char_lms(models):
        text = read_text(path)
        val_fraction = meta.training["config"]["data"].get("val_fraction", 0.1)
        ids = Tokenizer.load(version_dir / artifact.TOKENIZER_FILE).encode(text[int(len(text) * (1 - val_fraction)):])
        label = f"{name} ({meta.cell} {meta.sizes['n_layer']}x{meta.sizes['hidden_size']}, bundled)"
        rows.append(context_row(label, onnx_predictor(version_dir, meta), ids, plan))
    return {"contexts": list(plan.contexts), "full_context": plan.full_context, "rows": rows}


def measure(data: Path, models: Path, plan: Plan) -> dict[str, Any]:
    """Run the four experiments; a dict of every number and curve."""
    torch.set_num_threads(1)
    corpus = CharCorpus.from_file(data, recipe("rnn", data).data.val_fraction)
    print("1/4 gradient norm vs distance: rnn, lstm, gru at init and trained", flush=True)
    distance, runs = distance_experiment(corpus, data, plan)
    print("2/4 vanilla RNNs with scaled W_hh", flush=True)
    scaled = scaled_experiment(corpus, data, plan)
    print("3/4 clipping", flush=True)
    clipping = clipping_experiment(corpus, data, plan, runs["rnn-trained"])
    print("4/4 context length", flush=True)
    context = context_experiment(corpus, runs, models, plan)
    return {"plan": asdict(plan), "data": str(data), "distance": distance, "scaled": scaled, "clipping": clipping,
            "context": context}


def command(out: str | Path, data: str | Path | None, models: str | Path, quick: bool) -> None:
    """Measure everything, then write tables.md and the four PNGs under out."""
    out, models = Path(out), Path(models)
    data = Path(data) if data else recipe_data_path()
    if not data.is_file():
        raise FileNotFoundError(f"{data}: tiny shakespeare is not there, so nothing was measured "
                                "(the experiments train on it; pass --data FILE to use another copy)")
    results = measure(data, models, QUICK if quick else FULL)
    paths = figures(results, out)
    table = tables(results)
    (out / "tables.md").write_text(table)
    sys.stdout.write("\n" + table + "\n")
    print(f"wrote {out / 'tables.md'}, " + ", ".join(str(p) for p in paths))


def recipe_data_path() -> Path:
    """The corpus the vanilla-RNN recipe names (recipes' paths are relative to the repository root)."""
    return ROOT / json.loads((ROOT / "recipes" / RECIPES["rnn"]).read_text())["data"]["path"]
