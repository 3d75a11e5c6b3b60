"""No pickles: the service loads ONNX and JSON only, and training's checkpoints load with weights_only=True.

A pickle is a program: loading one from an untrusted file runs whatever it names. The service's
source is scanned for every way to unpickle (and for torch, which it must never import); its
loading path is watched at run time with the interpreter's own pickle.find_class audit event; and
a checkpoint carrying a real payload is shown to be refused by training's loader without running.
"""

from __future__ import annotations

import ast
import os
import pickle
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.support.audit import watching
from tests.support.data import ROOT

SERVICE = [p for p in (ROOT / "service").rglob("*.py") if "gen" not in p.relative_to(ROOT / "service").parts]

# Modules that unpickle (or, for torch, must never be in the service at all: the service runs without torch).
FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "torch", "pandas"}
# Calls that unpickle or read files the artifact contract does not name, by their dotted name.
FORBIDDEN_CALLS = {"np.load", "numpy.load", "onnx.load", "onnx.load_model", "torch.load", "pickle.load", "pickle.loads"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def violations(source: str) -> list[str]:
    """What in one module's source could unpickle: imports, calls, and any allow_pickle keyword."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.ImportFrom) and node.module in ("numpy", "onnx"):
            found += [f"from {node.module} import {a.name}" for a in node.names if a.name in ("load", "load_model")]
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in FORBIDDEN_CALLS or name in ("__import__", "importlib.import_module"):
                found.append(f"call {name}")
            found += [f"{name}(allow_pickle=...)" for k in node.keywords if k.arg == "allow_pickle"]
    return found


def test_the_scanner_finds_each_way_to_unpickle():
    """The scan itself must be able to fail: each of these lines is one violation."""
    bad = ["import pickle", "import joblib", "from torch import load", "import numpy as np\nnp.load('x.npy')",
           "from numpy import load", "import onnx\nonnx.load('m.onnx')", "f(allow_pickle=True)", "import dill",
           "__import__('pickle')", "import torch.serialization"]
    for line in bad:
        assert violations(line), line
    assert violations("import json\nimport numpy as np\nnp.zeros(3)\nimport onnx\nonnx.ModelProto.FromString(b'')") == []


@pytest.mark.parametrize("path", SERVICE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_service_module_can_unpickle(path):
    assert violations(path.read_text()) == []


def _project_sources() -> Iterator[Path]:
    """Our .py files: every top-level directory but the hidden ones (.venv, .git) and runs/ (training outputs)."""
    for top in sorted(ROOT.iterdir()):
        if top.name.startswith(".") or top.name == "runs":
            continue
        yield from [top] if top.suffix == ".py" else top.rglob("*.py") if top.is_dir() else []


def test_every_torch_load_in_the_project_is_weights_only():
    """training/, bench/, tests/ and anything else of ours: torch.load(..., weights_only=True) or nothing."""
    calls = []
    for path in _project_sources():
        if path == Path(__file__).resolve():
            continue  # its payload test runs one unrestricted load on purpose, to prove the payload is real
        rel = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _dotted(node.func).endswith("torch.load"):
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                calls.append((f"{rel}:{node.lineno}", safe))
    assert calls, "no torch.load found: the scan is not looking where the checkpoints are read"
    assert [where for where, safe in calls if not safe] == []


def unpickling() -> AbstractContextManager[list[tuple]]:
    """Every global any unpickler in the process looks up inside the block (the pickle.find_class audit event)."""
    return watching("pickle.find_class")


def test_the_find_class_watch_sees_an_unpickle():
    with unpickling() as seen:
        pickle.loads(pickle.dumps(Path("x")))
    assert ("pathlib", "PosixPath") in seen or ("pathlib", "Path") in seen


def test_loading_and_serving_models_never_unpickles(model_repo):
    """The whole load path (JSON, ONNX parse, ONNX Runtime session, self-checks) and a trace, watched."""
    from service.interpret.trace import Tracer
    from service.models.repository import Repository

    with unpickling() as seen:
        repo = Repository.load(model_repo, intra_op_threads=1)
        lm = repo.get("tiny-lstm")
        Tracer.load(lm.path / "model.onnx").run(lm.tokenizer.encode("To be")[None, :])
        lm.runner.run(lm.tokenizer.encode("To be")[None, :], lm.runner.zero_state(1))
    assert len(repo.all()) == len(list(model_repo.glob("*/1/meta.json"))) == 5  # every kind loaded
    assert seen == []


class Payload:
    """What an attacker pickles into a checkpoint: unpickling it runs `touch <marker>`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_with_a_pickled_payload_is_refused_without_running_it(tmp_path):
    torch = pytest.importorskip("torch")
    from training.checkpoint import load_checkpoint

    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "config": Payload(marker)}, path)
    with pytest.raises(ValueError, match=r"not a training checkpoint \(it holds objects other than tensors and plain data\)"):
        load_checkpoint(path)  # torch's weights-only refusal, as one line
    assert not marker.exists()
    # The payload is real: an unrestricted load runs it. This is what weights_only=True prevents.
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()
