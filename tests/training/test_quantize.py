"""python -m training quantize: an int8 version that passed its checks and quality gate, or nothing and the figures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from service.artifact import META_FILE, MODEL_FILE, TOKENS, Meta
from service.artifact.session import make_session
from service.models.repository import Repository, load_model
from tests.support.data import ROOT
from tests.support.harness import Running, pb, settings
from training.int8_lstm import UnsupportedGraphError
from training.quantize import QuantizationError, dynamic_int8, quantize_artifact, static_int8, verify_lm


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
    if name == "tiny-lstm":  # static by default: the cell as int8 MatMuls, no LSTM node; seeded text batch-independent
        assert q["method"] == "static" and "MatMulIntegerToFloat" in ops and "LSTM" not in ops
        assert q["seeded_text_batch_independent"] and q["checks"]["prefill_vs_steps_max_prob_diff"] == 0
    else:
        assert q["method"] == "dynamic" and "MatMulInteger" in ops
    loaded = load_model(src.parent / "2", name, 2)  # the service's own checks, self_check included
    assert loaded.meta.precision == "int8"
    repo = Repository.load(tmp_path / "models")
    assert repo.get(name).version == 2 and repo.get(name, 1).meta.precision == "fp32"


def _damaged(src: Path, dst: Path, write=dynamic_int8) -> None:
    """A real int8 graph whose quantized weights are shuffled: valid, self-consistent, and wrong."""
    write(src, dst)
    model = onnx.load(str(dst))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.int8 and w.size > 64:
            init.CopyFrom(numpy_helper.from_array(rng.permutation(w.ravel()).reshape(w.shape), init.name))
    onnx.save(model, str(dst))


def _damaged_static(src: Path, dst: Path) -> None:
    _damaged(src, dst, static_int8)


# The tiny test classifier is near chance, where no damage shows; the bundled one (83%) falls to chance.
@pytest.mark.parametrize("repo, name, method, damage", [(None, "tiny-lstm", "dynamic", _damaged),
                                                        (None, "tiny-lstm", "static", _damaged_static),
                                                        (ROOT / "models", "sst2-bilstm", "dynamic", _damaged)])
def test_a_graph_that_fails_the_quality_gate_is_refused_with_the_figures(model_repo, tmp_path, repo, name, method,
                                                                          damage):
    src = _copy_v1(repo or model_repo, name, tmp_path)
    with pytest.raises(QuantizationError, match=r"quality gate failed: val_\w+ fp32 [0-9.]+, int8 [0-9.]+"):
        quantize_artifact(src, src.parent / "2", method, data_root=ROOT, quantizer=damage)
    assert not (src.parent / "2" / MODEL_FILE).exists()


def test_an_int8_artifact_is_not_quantized_again(model_repo, tmp_path):
    src = _copy_v1(model_repo, "tiny-lstm", tmp_path)
    quantize_artifact(src, src.parent / "2")
    with pytest.raises(ValueError, match="already int8"):
        quantize_artifact(src.parent / "2", src.parent / "3")


# As in the training image (deploy/train.Dockerfile): no torch needed here, and of service/ only what it copies.
TRAINING_IMAGE = """
import sys
sys.modules["torch"] = None
class OnlyTheArtifactContract:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("service.") and not name.startswith("service.artifact"):
            raise ImportError(f"{name} is not in the training image: training imports only service.artifact")
sys.meta_path.insert(0, OnlyTheArtifactContract())
"""


def test_quantize_command_runs_without_torch_and_with_only_the_artifact_contract_of_service(model_repo, tmp_path):
    src = _copy_v1(model_repo, "tiny-lstm", tmp_path)
    code = (f"{TRAINING_IMAGE}\nfrom training.__main__ import main\n"
            f"main(['quantize', {str(src)!r}, {str(src.parent / '2')!r}])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "int8, verified" in out.stdout
    assert json.loads((src.parent / "2" / META_FILE).read_text())["precision"] == "int8"
    assert Meta.load(src / META_FILE).precision == "fp32"


def _state(n_layer: int, batch: int, hidden: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {k: rng.uniform(-0.9, 0.9, (n_layer, batch, hidden)).astype(np.float32) for k in ("h0", "c0")}


@pytest.mark.parametrize("write, independent", [(static_int8, True), (dynamic_int8, False)])
def test_static_int8_rows_are_computed_alone_and_dynamic_ones_are_not(model_repo, tmp_path, write, independent):
    """Each row of a batch gives bit for bit what it gives alone (the service's seeded-text promise), for the static
    graph; the dynamic graph's per-call activation scale couples the rows, which is why it is not the default."""
    src = ROOT / "models" / "shakespeare-lstm" / "1"
    write(src / MODEL_FILE, tmp_path / MODEL_FILE)
    sess, rng = make_session(tmp_path / MODEL_FILE, 1, 1), np.random.default_rng(0)
    tokens, state = rng.integers(0, 66, (5, 9)), _state(2, 5, 384, rng)
    batched = sess.run(None, {TOKENS: tokens, **state})
    alone = [sess.run(None, {TOKENS: tokens[i : i + 1], **{k: v[:, i : i + 1] for k, v in state.items()}})
             for i in range(5)]
    same = all(np.array_equal(batched[0][i], alone[i][0][0]) and np.array_equal(batched[1][:, i], alone[i][1][:, 0])
               for i in range(5))
    assert same is independent


def test_static_int8_follows_fp32_and_seeded_text_is_batch_independent(tmp_path):
    src = ROOT / "models" / "shakespeare-lstm" / "1"
    static_int8(src / MODEL_FILE, tmp_path / MODEL_FILE)
    fp32, int8 = make_session(src / MODEL_FILE, 1, 1), make_session(tmp_path / MODEL_FILE, 1, 1)
    rng = np.random.default_rng(1)
    feed = {TOKENS: rng.integers(0, 66, (3, 40)), **_state(2, 3, 384, rng)}
    (a, *sa), (b, *sb) = fp32.run(None, feed), int8.run(None, feed)
    probs = [np.exp(z - z.max(-1, keepdims=True)) / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)
             for z in (a, b)]
    # int8 error (mean 0.0004, hn 0.005, cn 0.016 here), not a wrong gate order or a lost bias (a wrong graph: ~0.02)
    assert np.abs(probs[0] - probs[1]).mean() < 0.002 and (probs[0].argmax(-1) == probs[1].argmax(-1)).mean() > 0.95
    assert all(np.abs(x - y).mean() < 0.05 for x, y in zip(sa, sb, strict=True))
    checks = verify_lm(int8, Meta.load(src / META_FILE))
    assert checks["seeded_text_same_alone_and_batched"] and checks["prefill_vs_steps_max_prob_diff"] == 0


def test_static_quantization_of_a_graph_it_does_not_know_is_refused(model_repo, tmp_path):
    src = _copy_v1(model_repo, "tiny-gru", tmp_path)
    with pytest.raises(UnsupportedGraphError, match="LSTM"):
        quantize_artifact(src, src.parent / "2", "static")
    assert not (src.parent / "2" / MODEL_FILE).exists()


def test_trace_reads_the_fp32_source_of_an_int8_default_and_refuses_the_int8_version_named(model_repo, tmp_path):
    src = _copy_v1(model_repo, "tiny-lstm", tmp_path)
    quantize_artifact(src, src.parent / "2", "static")
    running = Running(settings(tmp_path / "models"))
    try:
        fields = {"model": "tiny-lstm", "text": "abc", "layers": [0], "units": [1]}
        with pytest.raises(grpc.RpcError) as err:
            list(running.stub.Trace(pb.TraceRequest(**fields, version=2), timeout=30))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "version 1" in err.value.details()
        replies = list(running.stub.Trace(pb.TraceRequest(**fields), timeout=30))  # version 0: the int8 default's source
        assert replies[0].header.version == 1 and len(replies) > 1
        assert running.server.host.repo.get("tiny-lstm").version == 2
    finally:
        running.stop()


def test_an_int8_version_with_batch_dependent_seeded_text_is_served_only_when_named(model_repo, tmp_path):
    src = _copy_v1(model_repo, "tiny-lstm", tmp_path)
    meta = quantize_artifact(src, src.parent / "2", "dynamic")
    meta.evaluation["quantization"]["seeded_text_batch_independent"] = False  # as the bundled LSTM's dynamic graph records
    meta.save(src.parent / "2" / META_FILE)
    repo = Repository.load(tmp_path / "models")
    assert repo.get("tiny-lstm").version == 1 and repo.get("tiny-lstm", 2).meta.precision == "int8"
    assert repo.latest(repo.get("tiny-lstm", 1)) and not repo.latest(repo.get("tiny-lstm", 2))
    quantize_artifact(src, src.parent / "3", "static")
    assert Repository.load(tmp_path / "models").get("tiny-lstm").version == 3
