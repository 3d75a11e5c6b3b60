"""Training loop: config handling, determinism, exact resume, learning on real text, both optimizers."""

import itertools
import json
import time
from collections.abc import Callable

import pytest
import torch

from tests.support.data import ROOT, SHAKESPEARE, SST2_SENTENCES
from training.checkpoint import load_checkpoint
from training.config import load_config
from training.train import train

pytestmark = pytest.mark.usefixtures("shared_data")  # trains on ../shared/data

LM = ["--task=char_lm", f"--data.path={SHAKESPEARE}", "--threads=1", "--model.n_layer=1", "--model.n_embd=8",
      "--model.hidden_size=32", "--model.dropout=0.1", "--batch_size=8", "--seq_len=16", "--eval_interval=1000",
      "--sample_interval=0", "--optim.warmup_steps=5"]


def _cfg(tmp_path, *extra):
    return load_config(None, [*LM, f"--out_dir={tmp_path}", *extra])


def test_overrides_are_typed_and_unknown_keys_refused(tmp_path):
    cfg = _cfg(tmp_path, "--optim.lr=0.01", "--model.hidden_size=48", "--max_steps=7")
    assert cfg.optim.lr == 0.01 and cfg.model["hidden_size"] == 48 and cfg.max_steps == 7
    with pytest.raises(ValueError, match=r"unknown config key: optim\.lrr"):
        _cfg(tmp_path, "--optim.lrr=1")
    with pytest.raises(ValueError, match=r"unknown config key: model\.hiden_size"):
        _cfg(tmp_path, "--model.hiden_size=3")
    with pytest.raises(ValueError, match="expects a number"):
        _cfg(tmp_path, "--max_steps=many")
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"task": "char_lm", "data": {"path": "x", "typo": 1}}))
    with pytest.raises(ValueError, match=r"unknown config key\(s\) in config.data: typo"):
        load_config(recipe)


def test_every_bundled_recipe_is_a_valid_config():

    recipes = sorted(ROOT.glob("recipes/*.json"))
    assert recipes
    for r in recipes:
        load_config(r)


def test_same_seed_gives_the_same_model(tmp_path):
    a = train(_cfg(tmp_path / "a", "--max_steps=6"), progress=False)
    b = train(_cfg(tmp_path / "b", "--max_steps=6"), progress=False)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_resume_continues_exactly(tmp_path, monkeypatch):
    """Resuming the step-10 checkpoint gives the same step-20 model as running straight through:
    weights, optimizer, carried state, data position and RNGs (dropout) are all restored."""
    import training.train as loop

    real_save = loop.save_checkpoint

    def save_and_keep_step_10(path, ckpt):
        real_save(path, ckpt)
        if ckpt["step"] == 10:
            real_save(tmp_path / "step10.pt", ckpt)

    monkeypatch.setattr(loop, "save_checkpoint", save_and_keep_step_10)
    straight = train(_cfg(tmp_path / "s", "--max_steps=20", "--checkpoint_interval=10"), progress=False)
    ckpt = load_checkpoint(tmp_path / "step10.pt")
    ckpt["config"]["out_dir"] = str(tmp_path / "r")
    torch.save(ckpt, tmp_path / "step10.pt")
    resumed = train(resume=tmp_path / "step10.pt", progress=False)
    assert resumed["step"] == 20
    for k in straight["model"]:
        assert torch.equal(straight["model"][k], resumed["model"][k]), k


@pytest.mark.slow
def test_lm_learns_real_text_and_logs_grad_norm(tmp_path):
    ckpt = train(_cfg(tmp_path, "--max_steps=120", "--eval_interval=60", "--optim.lr=0.01"), progress=False)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    evals = [r["val_loss"] for r in log if "val_loss" in r]
    assert evals[-1] < 3.0 < evals[0] + 1  # uniform over 65 characters would be ln 65 = 4.17
    assert all(r["grad_norm"] > 0 for r in log if "grad_norm" in r)
    assert ckpt["metrics"]["val_bpc"] == pytest.approx(ckpt["metrics"]["val_loss"] / 0.6931471805599453)


def test_adagrad_like_min_char_rnn_trains(tmp_path):
    ckpt = train(_cfg(tmp_path, "--max_steps=60", "--optim.name=adagrad", "--optim.lr=0.1",
                      "--model.cell=rnn", "--optim.decay=none"), progress=False)
    assert ckpt["metrics"]["val_loss"] < 3.6


@pytest.mark.slow
def test_classifier_trains_and_reports_confusion(tmp_path):
    cfg = load_config(None, ["--task=classifier", f"--data.path={SST2_SENTENCES / 'stsa.binary.train'}",
                             f"--data.val_path={SST2_SENTENCES / 'stsa.binary.dev'}", "--data.level=word",
                             "--data.min_freq=2", "--threads=1", "--model.n_embd=16", "--model.hidden_size=16",
                             "--batch_size=64", "--max_steps=60", "--eval_interval=60", f"--out_dir={tmp_path}"])
    m = train(cfg, progress=False)["metrics"]
    assert sum(map(sum, m["val_confusion"])) == m["val_examples"] == 872
    assert m["val_accuracy"] > 0.55


def _ticking_clock() -> Callable[[], float]:
    """A clock that reads 1 ms later at every reading."""
    ticks = itertools.count(1)
    return lambda: next(ticks) * 1e-3


@pytest.mark.slow
def test_a_run_stopped_by_its_budget_logs_evaluates_and_checkpoints_its_last_step(tmp_path, monkeypatch):
    """Whichever clock reading inside a step crosses the budget, that step is the run's last, in full."""
    for extra_ms in range(12):  # more than the clock readings in one step: the crossing lands on each of them
        monkeypatch.setattr(time, "perf_counter", _ticking_clock())
        budget_min = (0.1 + extra_ms * 1e-3) / 60
        out = tmp_path / str(extra_ms)
        ckpt = train(_cfg(out, "--max_steps=1000000", f"--time_budget_min={budget_min!r}", "--time_budget_clock=wall",
                          "--log_interval=1"), progress=False)
        last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
        assert "val_loss" in last and last["budget_min"] >= budget_min, (extra_ms, last)
        assert last["step"] == ckpt["step"] == load_checkpoint(out / "last.pt")["step"]


@pytest.mark.parametrize("clock", ["wall", "cpu"])
@pytest.mark.slow
def test_time_budget_stops_the_run_and_decays_the_lr_to_its_floor(tmp_path, clock):
    ckpt = train(_cfg(tmp_path, "--max_steps=1000000", "--time_budget_min=0.02", f"--time_budget_clock={clock}",
                      "--log_interval=1"), progress=False)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert 0 < ckpt["step"] < 1000000
    assert log[-1]["budget_min"] >= 0.02 and log[-2]["budget_min"] < 0.02 + 0.01
    lrs = [r["lr"] for r in log if "lr" in r]
    assert lrs[-1] < 0.2 * max(lrs)  # cosine decay followed the clock down towards min_lr_ratio * lr


def test_best_checkpoint_holds_the_lowest_validation_loss(tmp_path):
    """A run that overfits late can be exported from its best evaluation: best.pt is the step whose
    validation loss was the lowest, with everything a resume needs."""
    train(_cfg(tmp_path, "--max_steps=12", "--eval_interval=3", "--optim.lr=0.05"), progress=False)
    evals = [r for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines()) if "val_loss" in r]
    assert len(evals) == 4
    lowest = min(evals, key=lambda r: r["val_loss"])
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == lowest["step"] and best["best_loss"] == lowest["val_loss"]
    assert best["metrics"]["val_loss"] == lowest["val_loss"] and "optimizer" in best


def test_a_cpu_budget_counts_budget_cores_not_threads(tmp_path, monkeypatch):
    """One thread with budget_cores 2: a budget minute is 2 CPU-minutes, as "N minutes of 2 cores" says,
    so the same budget runs twice the steps it runs when a minute is one CPU-minute."""
    steps = {}
    for cores in (1, 2):
        cpu = itertools.count(0, 3.0)  # every reading of the CPU clock is 3 s later: a clock the test controls
        monkeypatch.setattr(time, "process_time", lambda cpu=cpu: next(cpu))
        ckpt = train(_cfg(tmp_path / str(cores), "--max_steps=1000000", "--time_budget_min=2", "--time_budget_clock=cpu",
                          f"--budget_cores={cores}"), progress=False)
        steps[cores] = ckpt["step"]
    assert 1.8 < steps[2] / steps[1] < 2.2, steps
