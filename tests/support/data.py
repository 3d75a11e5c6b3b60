"""The data the tests read from ../shared/data, and small real artifacts made from it by the real pipeline.

A test that needs a file that is missing is skipped with the path it needs (failed instead where CI=true:
CI must not pass by skipping).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"
SST2 = DATA / "sst2"
SST2_SENTENCES = DATA / "sst2-sentences"
MULTI30K = DATA / "multi30k"
MULTI30K_FILES = tuple(MULTI30K / f"{split}.{lang}" for split in ("train", "val", "test2016") for lang in ("de", "en"))
FLICKR8K = DATA / "flickr8k"
FLICKR8K_FILES = (FLICKR8K / "captions.token.txt", FLICKR8K / "images_manifest.tsv",
                  *(FLICKR8K / f"split_{split}.txt" for split in ("train", "dev", "test")))
USED = (SHAKESPEARE, SST2 / "train.tsv", SST2 / "dev.tsv", SST2_SENTENCES / "stsa.binary.train",
        SST2_SENTENCES / "stsa.binary.dev", *MULTI30K_FILES, *FLICKR8K_FILES)


def need(*paths: Path) -> None:
    """Skip the calling test (fail it where CI=true) unless these data files exist (default: all the tests read)."""
    missing = [p for p in paths or USED if not p.exists()]
    if not missing:
        return
    message = (f"missing shared data: {', '.join(str(p) for p in missing)} (the corpora the bundled recipes train on; "
               "`make data` says where they come from)")
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def train_and_export(tmp: Path, name: str, overrides: dict) -> Path:
    """Train a few steps with the real loop, export with the real (self-verifying) exporter."""
    from training.config import load_config
    from training.export import export_checkpoint
    from training.train import train

    # One torch thread: tests share two cores with other processes, where OpenMP spin-waiting
    # threads of two busy processes slow both by 10x or more.
    settings = {"name": name, "out_dir": str(tmp / "runs" / name), "threads": 1, **overrides}
    args = [f"--{k}={v}" for k, v in settings.items()]
    train(load_config(None, args), progress=False)
    out = tmp / "models" / name / "1"
    export_checkpoint(tmp / "runs" / name / "last.pt", out)
    return out
