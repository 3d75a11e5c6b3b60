"""The model repository: versions, latest by default, broken artifacts skipped with a clear log line."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from service.errors import NotFound
from service.models.repository import Repository, scan
from tests.support.audit import recording
from tests.support.harness import Running, generate, settings


@pytest.fixture(scope="module")
def messy_repo(model_repo, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    good = model_repo / "tiny-lstm" / "1"
    for version in ("1", "2"):
        shutil.copytree(good, root / "lm" / version)
    shutil.copytree(model_repo / "tiny-sentiment" / "1", root / "clf" / "3")
    shutil.copytree(good, root / "garbage-onnx" / "1")
    (root / "garbage-onnx" / "1" / "model.onnx").write_bytes(b"not a graph")
    shutil.copytree(good, root / "no-meta" / "1")
    (root / "no-meta" / "1" / "meta.json").unlink()
    shutil.copytree(good, root / "wrong-vocab" / "1")
    meta = json.loads((good / "meta.json").read_text())
    meta["sizes"]["vocab_size"] += 1
    (root / "wrong-vocab" / "1" / "meta.json").write_text(json.dumps(meta))
    shutil.copytree(good, root / "bad-kind" / "1")
    (root / "bad-kind" / "1" / "meta.json").write_text(json.dumps({**meta, "kind": "no-such-kind"}))
    shutil.copytree(good, root / "lm" / "latest")
    return root


def test_loads_valid_versions_and_skips_broken_ones_with_reasons(messy_repo, caplog):
    with caplog.at_level(logging.ERROR, logger="rnnserve"):
        repo = Repository.load(messy_repo, intra_op_threads=1)
    assert {n: sorted(v) for n, v in repo.models.items()} == {"clf": [3], "lm": [1, 2]}
    reasons = {k.split("/")[-2] + "/" + k.split("/")[-1]: v for k, v in repo.skipped.items()}
    assert set(reasons) == {"garbage-onnx/1", "no-meta/1", "wrong-vocab/1", "bad-kind/1", "lm/latest"}
    assert "not an ONNX model" in reasons["garbage-onnx/1"]
    assert "missing meta.json" in reasons["no-meta/1"]
    assert "vocab_size" in reasons["wrong-vocab/1"]
    assert "no-such-kind" in reasons["bad-kind/1"]
    assert "positive integers" in reasons["lm/latest"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert all(f"skipping {path}" in logged for path in repo.skipped)

    assert repo.get("lm").version == 2 and repo.get("lm", 1).version == 1
    with pytest.raises(NotFound, match="no version 5"):
        repo.get("lm", 5)
    with pytest.raises(NotFound, match="available: clf, lm"):
        repo.get("garbage-onnx")


def test_missing_model_directory_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Repository.load(tmp_path / "nope")


def test_a_server_over_a_messy_repository_serves_the_valid_models(messy_repo):
    running = Running(settings(messy_repo))
    try:
        latest = generate(running.stub, model="lm", prompt="A", max_tokens=3)[1][-1].finished
        named = generate(running.stub, model="lm", version=1, prompt="A", max_tokens=3)[1][-1].finished
        assert (latest.version, named.version) == (2, 1)
    finally:
        running.stop()


def test_scan_returns_the_candidates_and_reasons_without_logging_or_opening_a_file(messy_repo, tmp_path, caplog):
    """scan() is the walk hot reload polls: cheap (no file opened) and quiet (the caller logs what is news)."""
    (tmp_path / "root").symlink_to(messy_repo)  # a repository reached through a link is still itself
    with caplog.at_level(logging.DEBUG, logger="rnnserve"), recording() as opened:
        candidates, skipped = scan(tmp_path / "root")
    assert [(name, version) for name, version, _ in candidates] == [
        ("bad-kind", 1), ("clf", 3), ("garbage-onnx", 1), ("lm", 1), ("lm", 2), ("no-meta", 1), ("wrong-vocab", 1)]
    assert all(path == tmp_path / "root" / name / str(version) for name, version, path in candidates)
    [(path, reason)] = skipped.items()
    assert path == str(tmp_path / "root" / "lm" / "latest") and "positive integers" in reason
    assert caplog.records == []
    assert not [p for p in opened if not Path(p).is_dir()]  # it lists directories and reads no file
