"""python -m training quantize: an int8 version that passed its checks and quality gate, or nothing and the figures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from service.artifact import META_FILE, MODEL_FILE, Meta
from service.models.repository import Repository, load_model
from tests.support.data import ROOT
from training.quantize import QuantizationError, dynamic_int8, quantize_artifact


def _copy_v1(model_repo: Path, name: str, tmp_path: Path) -> Path:
    src = tmp_path / "models" / name / "1"
    shutil.copytree(model_repo / name / "1", src)
    return src


@pytest.mark.parametrize("name", ["tiny-lstm", "tiny-sentiment"])
def test_quantize_writes_an_int8_version_that_loads_and_becomes_latest(model_repo, tmp_path, name):
    src = _copy_v1(model_repo, name, tmp_path)
    meta = quantize_artifact(src, src.parent / "2")
    assert meta.precision == "int8"
    q = meta.evaluation["quantization"]
    assert q["gate"]["int8"] is not None and q["gate"]["fp32"] is not None
    assert set(q["speed_1_thread"]) == {"fp32", "int8"}
    ops = {n.op_type for n in onnx.load(str(src.parent / "2" / MODEL_FILE)).graph.node}
    assert "MatMulInteger" in ops and ("DynamicQuantizeLSTM" in ops or name != "tiny-lstm")
    loaded = load_model(src.parent / "2", name, 2)  # the service's own checks, self_check included
    assert loaded.meta.precision == "int8"
    repo = Repository.load(tmp_path / "models")
    assert repo.get(name).version == 2 and repo.get(name, 1).meta.precision == "fp32"


def _damaged(src: Path, dst: Path) -> None:
    """A real int8 graph whose quantized weights are shuffled: valid, self-consistent, and wrong."""
    dynamic_int8(src, dst)
    model = onnx.load(str(dst))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.int8 and w.size > 64:
            init.CopyFrom(numpy_helper.from_array(rng.permutation(w.ravel()).reshape(w.shape), init.name))
    onnx.save(model, str(dst))


# The tiny test classifier is near chance, where no damage shows; the bundled one (83%) falls to chance.
@pytest.mark.parametrize("repo, name", [(None, "tiny-lstm"), (ROOT / "models", "sst2-bilstm")])
def test_a_graph_that_fails_the_quality_gate_is_refused_with_the_figures(model_repo, tmp_path, repo, name):
    src = _copy_v1(repo or model_repo, name, tmp_path)
    with pytest.raises(QuantizationError, match=r"quality gate failed: val_\w+ fp32 [0-9.]+, int8 [0-9.]+"):
        quantize_artifact(src, src.parent / "2", quantizer=_damaged, data_root=ROOT)
    assert not (src.parent / "2" / MODEL_FILE).exists()


def test_an_int8_artifact_is_not_quantized_again(model_repo, tmp_path):
    src = _copy_v1(model_repo, "tiny-lstm", tmp_path)
    quantize_artifact(src, src.parent / "2")
    with pytest.raises(ValueError, match="already int8"):
        quantize_artifact(src.parent / "2", src.parent / "3")


def test_quantize_command_runs_without_torch(model_repo, tmp_path):
    src = _copy_v1(model_repo, "tiny-lstm", tmp_path)
    code = ("import sys; sys.modules['torch'] = None; from training.__main__ import main; "
            f"main(['quantize', {str(src)!r}, {str(src.parent / '2')!r}])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "int8, verified" in out.stdout
    assert json.loads((src.parent / "2" / META_FILE).read_text())["precision"] == "int8"
    assert Meta.load(src / META_FILE).precision == "fp32"
