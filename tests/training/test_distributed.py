"""Data-parallel training is one-process training, faster: 2 ranks (torchrun, gloo) with global batch B give the
loss curve and the weights of one process with batch B, and a run resumes with a different number of ranks.

The tolerance: the ranks' halves of a batch go through smaller matrix products and DDP sums their gradients in
buckets, so float32 sums are added in another order. Measured over these 6 AdamW steps: weights within 2.1e-7,
losses within 4.8e-7 (one float32 ulp at a loss of 4); TOL leaves 20x of room. Dropout is off: ranks draw their
own masks, so with dropout the runs are equal in distribution only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.support.data import ROOT, SHAKESPEARE, SST2_SENTENCES
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import load_config
from training.distributed import World
from training.tasks import ClassifierTask, LMTask
from training.train import train

TOL = 1e-5

COMMON = ["--threads=1", "--max_steps=6", "--log_interval=1", "--eval_interval=1000", "--sample_interval=0",
          "--checkpoint_interval=1000", "--optim.warmup_steps=2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A 40k-character corpus, 17 labelled sentences (batches of 8, 8 and 1: the last leaves one rank without a
    sentence), and 300 toy translation pairs; all small, so a run is dominated by starting the processes."""
    if not SHAKESPEARE.exists() or not (SST2_SENTENCES / "stsa.binary.dev").exists():
        pytest.skip("needs ../shared/data (tinyshakespeare, sst2-sentences)")
    d = tmp_path_factory.mktemp("ddp-data")
    (d / "corpus.txt").write_text(SHAKESPEARE.read_text(encoding="utf-8")[:40_000], encoding="utf-8")
    lines = (SST2_SENTENCES / "stsa.binary.dev").read_text(encoding="utf-8").splitlines()
    (d / "sentences.txt").write_text("\n".join(lines[:9] + lines[-8:]) + "\n", encoding="utf-8")
    rng = np.random.default_rng(0)
    for split, n in (("train", 300), ("val", 8)):
        ids = [rng.integers(0, 20, rng.integers(2, 9)) for _ in range(n)]
        (d / f"{split}.xx").write_text("".join(" ".join(f"qu{i}x" for i in s) + "\n" for s in ids))
        (d / f"{split}.yy").write_text("".join(" ".join(f"zo{i}" for i in s) + " .\n" for s in ids))
    return d


def _args(task: str, d: Path) -> list[str]:
    """A tiny model of each task, without dropout, and with clipping that binds (it acts on the averaged gradient)."""
    return {
        "char_lm": ["--task=char_lm", f"--data.path={d / 'corpus.txt'}", "--model.cell=lstm", "--model.n_layer=2",
                    "--model.n_embd=8", "--model.hidden_size=24", "--batch_size=8", "--seq_len=16",
                    "--optim.grad_clip=0.1"],
        "classifier": ["--task=classifier", f"--data.path={d / 'sentences.txt'}", f"--data.val_path={d / 'sentences.txt'}",
                       "--data.level=word", "--model.n_embd=8", "--model.hidden_size=8", "--model.bidirectional=true",
                       "--model.dropout=0", "--batch_size=8", "--optim.grad_clip=0.5"],
        "translation": ["--task=translation", f"--data.path={d / 'train'}", f"--data.val_path={d / 'val'}",
                        "--data.source=xx", "--data.target=yy", "--data.level=word", "--model.n_embd=8",
                        "--model.enc_hidden=8", "--model.dec_hidden=12", "--model.dropout=0", "--batch_tokens=120",
                        "--decode.max_len_b=4"],
    }[task]


def _in_process(args: list[str], out: Path) -> dict:
    return train(load_config(None, [*args, f"--out_dir={out}"]), progress=False)


def _torchrun(nproc: int, *args: str) -> None:
    """`torchrun --standalone` (a free port on loopback) running the real CLI on nproc ranks, one thread each."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "training", "train", "--quiet", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


def _curve(out: Path, key: str = "loss") -> list[float]:
    """A logged value of every step (rank 0's log): the global batch's loss, or the norm of the (averaged) gradient
    before clipping. AdamW's step and clipping hide a gradient scaled by a constant; the norm shows it."""
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r[key] for r in records if "loss" in r]


def _assert_same_model(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] and a["seen"] == b["seen"]
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], atol=TOL, rtol=0, msg=k)


@pytest.mark.process
@pytest.mark.parametrize("task", ["char_lm", "classifier", "translation"])
def test_two_ranks_match_one_process(task, data, tmp_path):
    args = [*_args(task, data), *COMMON]
    one = _in_process(args, tmp_path / "one")
    _torchrun(2, *args, f"--out_dir={tmp_path / 'two'}")
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    assert len(_curve(tmp_path / "two")) == 6  # one record a step: rank 0 alone writes
    for key in ("loss", "grad_norm", "lr"):
        np.testing.assert_allclose(_curve(tmp_path / "two", key), _curve(tmp_path / "one", key), atol=TOL, rtol=0,
                                   err_msg=key)
    _assert_same_model(one, two)
    assert two["metrics"].keys() == one["metrics"].keys()  # rank 0 evaluated the last step
    if task == "char_lm":  # the carried state of all B streams, gathered from both ranks
        for a, b in zip(one["task"]["carry"], two["task"]["carry"], strict=True):
            torch.testing.assert_close(b, a, atol=TOL, rtol=0)


def _continue(ckpt_path: Path, max_steps: int, out: Path) -> Path:
    """The checkpoint, set to run on to max_steps into out (as the exact-resume test of test_train.py does)."""
    ckpt = load_checkpoint(ckpt_path)
    ckpt["config"]["max_steps"], ckpt["config"]["out_dir"] = max_steps, str(out)
    save_checkpoint(out.with_suffix(".pt"), ckpt)
    return out.with_suffix(".pt")


@pytest.mark.process
def test_resume_with_another_number_of_ranks(data, tmp_path):
    """1 process for 4 steps, then 2 ranks to step 8, then 1 process to step 12, equals 12 steps in one process:
    the checkpoint holds the global data position and all B streams' state, sliced anew for each world size.
    (No LR decay, so the schedule does not depend on max_steps, which the pieces change.)"""
    args = [*_args("char_lm", data), *COMMON, "--optim.decay=none"]
    straight = _in_process([*args, "--max_steps=12"], tmp_path / "straight")
    _in_process([*args, "--max_steps=4"], tmp_path / "a")
    _torchrun(2, "--resume", str(_continue(tmp_path / "a" / "last.pt", 8, tmp_path / "b")))
    pieced = train(resume=_continue(tmp_path / "b" / "last.pt", 12, tmp_path / "c"), progress=False)
    _assert_same_model(straight, pieced)
    for key in ("loss", "grad_norm"):
        pieces = [value for part in "abc" for value in _curve(tmp_path / part, key)]
        np.testing.assert_allclose(pieces, _curve(tmp_path / "straight", key), atol=TOL, rtol=0, err_msg=key)


def _agree_and_gather(rank: int, tmp: Path) -> None:
    """One rank of a 2-process gloo group (rendezvous through a file): its answers go to tmp/rank<r>.pt."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp / 'store'}", rank=rank, world_size=2)
    world = World(rank, 2)
    agreed = world.agree(loss_share=0.25 + rank, units=3 + rank, budget_used=10.0 if rank == 0 else 99.0)
    carry = world.gather_rows(torch.full((2, 1, 3), float(rank)), dim=1)  # (L, b, H) -> (L, B, H)
    dist.destroy_process_group()
    torch.save({"agreed": agreed, "carry": carry}, tmp / f"rank{rank}.pt")


@pytest.mark.process
def test_ranks_agree_on_loss_units_and_rank_0s_clock(tmp_path):
    """The per-step all-reduce: the loss and units are sums over ranks, the budget clock is rank 0's, on every
    rank (so all set the same LR and stop on the same step); the LM's state is gathered in rank order."""
    mp.spawn(_agree_and_gather, args=(tmp_path,), nprocs=2)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["agreed"] == (1.5, 7, 10.0)
        assert got["carry"].shape == (2, 2, 3) and got["carry"][:, :, 0].tolist() == [[0.0, 1.0], [0.0, 1.0]]


@pytest.mark.process
def test_ranks_stop_together_on_a_time_budget(data, tmp_path):
    """Each rank's clock starts at its own moment; the stop is rank 0's, agreed every step, so the job ends
    cleanly on a step that was logged, evaluated and checkpointed as the last."""
    _torchrun(2, *_args("char_lm", data), *COMMON, "--max_steps=1000000", "--time_budget_min=0.03",
              f"--out_dir={tmp_path}")
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert 0 < ckpt["step"] < 1_000_000 and len(_curve(tmp_path)) == ckpt["step"]


@pytest.mark.process
def test_training_image_script_trains_on_ranks_then_exports(tmp_path):
    """deploy/train.sh, the training image's entrypoint, with NPROC=2: torchrun runs the recipe on 2 ranks, then the
    checkpoint rank 0 wrote is exported (run here on the host, from a directory laid out like the image's)."""
    if not SHAKESPEARE.exists():
        pytest.skip(f"needs {SHAKESPEARE}")
    work, shared = tmp_path / "rnnserve", tmp_path / "shared"
    work.mkdir()
    shared.mkdir()
    (shared / "data").symlink_to(SHAKESPEARE.parents[1])  # the recipes read ../shared/data/...
    for name in ("training", "service", "recipes"):
        (work / name).symlink_to(ROOT / name)
    env = {**os.environ, "NPROC": "2", "MODELS_OUT": str(tmp_path / "models"), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", str(ROOT / "deploy" / "train.sh"), "tiny-lm", "--max_steps=4", "--threads=1",
                           "--sample_interval=0", "--log_interval=1"], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(_curve(work / "runs" / "tiny-lm")) == 4
    meta = json.loads((tmp_path / "models" / "tiny-lm" / "1" / "meta.json").read_text())
    assert meta["training"]["config"]["batch_size"] == 16  # the recipe's global batch, 8 streams a rank


def test_global_batch_must_split_evenly_among_ranks(data, tmp_path):
    cfg = load_config(None, [*_args("char_lm", data), f"--out_dir={tmp_path}", "--batch_size=6"])
    with pytest.raises(ValueError, match=r"batch_size \(6\) is the global batch and must be divisible .* \(4\)"):
        LMTask(cfg).shard(World(rank=1, size=4))
    cfg = load_config(None, [*_args("classifier", data), f"--out_dir={tmp_path}", "--batch_size=6"])
    with pytest.raises(ValueError, match=r"batch_size \(6\)"):
        ClassifierTask(cfg).shard(World(rank=0, size=4))


def test_ranks_split_a_batch_into_contiguous_shares():
    idx = np.arange(10, 17)  # 7 items over 3 ranks: 2, 2, 3
    shares = [World(r, 3).share(idx) for r in range(3)]
    assert np.concatenate([s for s, _ in shares]).tolist() == idx.tolist()
    assert all(w == 1.0 for _, w in shares)
    short = [World(r, 3).share(np.array([5, 6])) for r in range(3)]
    assert [(s.tolist(), w) for s, w in short] == [([5], 0.0), ([5], 1.0), ([6], 1.0)]
