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
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from service.artifact import LENGTHS, META_FILE, MODEL_FILE, TOKENIZER_FILE, TOKENS, Meta
from service.artifact.corpus import DataError
from service.artifact.session import make_session
from service.artifact.tokenizer import Tokenizer
from service.models.repository import Repository, load_model
from tests.support.data import ROOT
from tests.support.harness import Running, pb, settings
from training import pycorpus
from training.int8_graph import UnsupportedGraphError
from training.quantize import (
    ROW_TOL,
    QuantizationError,
    dynamic_int8,
    quantize_artifact,
    static_int8,
    verify_lm,
)


def _copy_v1(model_repo: Path, name: str, tmp_path: Path) -> Path:
    src = tmp_path / "models" / name / "1"
    shutil.copytree(model_repo / name / "1", src)
    return src


@pytest.mark.parametrize("name", ["tiny-lstm", "tiny-gru", "tiny-sentiment"])
def test_quantize_writes_an_int8_version_that_loads_and_becomes_latest(model_repo, tmp_path, name):
    src = _copy_v1(model_repo, name, tmp_path)
    meta = quantize_artifact(src, src.parent / "2")
    assert meta.precision == "int8"
    q = meta.evaluation["quantization"]
    assert q["gate"]["int8"] is not None and q["gate"]["fp32"] is not None
    assert set(q["speed_1_thread"]) == {"fp32", "int8"}
    assert set(meta.runtime) == {"intra_op_num_threads"}  # the fp32 graph's timings are not the int8 graph's
    ops = {n.op_type for n in onnx.load(str(src.parent / "2" / MODEL_FILE)).graph.node}
    # static by default: the cell as int8 MatMuls, no LSTM/GRU node; rows computed alone
    assert q["method"] == "static" and "MatMulIntegerToFloat" in ops and not {"LSTM", "GRU"} & ops
    if name == "tiny-sentiment":
        assert q["checks"]["padded_vs_alone_max_prob_diff"] <= ROW_TOL
    else:
        assert q["seeded_text_batch_independent"] and q["checks"]["prefill_vs_steps_max_prob_diff"] == 0
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


# The tiny test classifier is near chance and the tiny GRU near the unigram distribution, where no damage shows;
# the bundled ones (83%, 1.48 nats/char) fall apart.
@pytest.mark.parametrize("repo, name, method, damage", [(None, "tiny-lstm", "dynamic", _damaged),
                                                        (None, "tiny-lstm", "static", _damaged_static),
                                                        (ROOT / "models", "shakespeare-gru", "static", _damaged_static),
                                                        (ROOT / "models", "sst2-bilstm", "dynamic", _damaged),
                                                        (ROOT / "models", "sst2-bilstm", "static", _damaged_static)])
def test_a_graph_that_fails_the_quality_gate_is_refused_with_the_figures(model_repo, tmp_path, repo, name, method,
                                                                          damage):
    src = _copy_v1(repo or model_repo, name, tmp_path)
    with pytest.raises(QuantizationError, match=r"quality gate failed: val_\w+ fp32 [0-9.]+, int8 [0-9.]+"):
        quantize_artifact(src, src.parent / "2", method, data_root=ROOT, quantizer=damage)
    assert not (src.parent / "2" / MODEL_FILE).exists()


@pytest.mark.parametrize("name, why", [("tiny-lstm", "prefill == steps exactly"), ("tiny-sentiment", "alone")])
def test_a_static_graph_whose_rows_depend_on_the_batch_is_refused(model_repo, tmp_path, name, why):
    """The static method promises rows computed alone: a graph with per-call activation scales (dynamic's) under
    its name is refused, whatever its quality."""
    src = _copy_v1(model_repo, name, tmp_path)
    with pytest.raises(QuantizationError, match=f"a static graph must give .*{why}"):
        quantize_artifact(src, src.parent / "2", "static", data_root=ROOT, quantizer=dynamic_int8)
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


def _state(meta: Meta, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A random state inside what the graph can produce: h in (-1, 1) (and an LSTM's c, here)."""
    return {s.input: rng.uniform(-0.9, 0.9, (s.n_layer, batch, s.hidden_size)).astype(np.float32) for s in meta.state}


@pytest.mark.parametrize("name, write, independent", [("shakespeare-lstm", static_int8, True),
                                                      ("shakespeare-gru", static_int8, True),
                                                      ("shakespeare-lstm", dynamic_int8, False)])
def test_static_int8_rows_are_computed_alone_and_dynamic_ones_are_not(tmp_path, name, write, independent):
    """Each row of a batch gives bit for bit what it gives alone (the service's seeded-text promise), for the static
    graph; the dynamic graph's per-call activation scale couples the rows, which is why it is not the default."""
    src = ROOT / "models" / name / "1"
    write(src / MODEL_FILE, tmp_path / MODEL_FILE)
    sess, rng, meta = make_session(tmp_path / MODEL_FILE, 1, 1), np.random.default_rng(0), Meta.load(src / META_FILE)
    tokens, state = rng.integers(0, 66, (5, 9)), _state(meta, 5, rng)
    batched = sess.run(None, {TOKENS: tokens, **state})
    alone = [sess.run(None, {TOKENS: tokens[i : i + 1], **{k: v[:, i : i + 1] for k, v in state.items()}})
             for i in range(5)]
    same = all(np.array_equal(batched[0][i], alone[i][0][0])
               and all(np.array_equal(b[:, i], a[:, 0]) for b, a in zip(batched[1:], alone[i][1:], strict=True))
               for i in range(5))
    assert same is independent


@pytest.mark.parametrize("name", ["shakespeare-lstm", "shakespeare-gru"])
def test_static_int8_follows_fp32_and_seeded_text_is_batch_independent(tmp_path, name):
    src = ROOT / "models" / name / "1"
    meta = Meta.load(src / META_FILE)
    static_int8(src / MODEL_FILE, tmp_path / MODEL_FILE)
    fp32, int8 = make_session(src / MODEL_FILE, 1, 1), make_session(tmp_path / MODEL_FILE, 1, 1)
    rng = np.random.default_rng(1)
    feed = {TOKENS: rng.integers(0, 66, (3, 40)), **_state(meta, 3, rng)}
    (a, *sa), (b, *sb) = fp32.run(None, feed), int8.run(None, feed)
    probs = [np.exp(z - z.max(-1, keepdims=True)) / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)
             for z in (a, b)]
    # int8 error (LSTM: mean 0.0004, hn 0.005, cn 0.016 here; GRU: 0.0002, hn 0.005), not a wrong gate order or a
    # lost bias (a wrong graph: ~0.02)
    assert np.abs(probs[0] - probs[1]).mean() < 0.002 and (probs[0].argmax(-1) == probs[1].argmax(-1)).mean() > 0.95
    assert all(np.abs(x - y).mean() < 0.05 for x, y in zip(sa, sb, strict=True))
    checks = verify_lm(int8, meta)
    assert checks["seeded_text_same_alone_and_batched"] and checks["prefill_vs_steps_max_prob_diff"] == 0


def test_static_quantization_of_a_graph_it_does_not_know_is_refused(model_repo, tmp_path):
    """A GRU whose reset gate applies before the recurrent projection (linear_before_reset = 0, not what torch
    exports) computes another function: the builder refuses it rather than write the wrong graph."""
    src = _copy_v1(model_repo, "tiny-gru", tmp_path)
    model = onnx.load(str(src / MODEL_FILE))
    for node in (n for n in model.graph.node if n.op_type == "GRU"):
        next(a for a in node.attribute if a.name == "linear_before_reset").i = 0
    onnx.save(model, str(src / MODEL_FILE))
    with pytest.raises(UnsupportedGraphError, match="linear_before_reset"):
        quantize_artifact(src, src.parent / "2", "static")
    assert not (src.parent / "2" / MODEL_FILE).exists()


TEXTS = ["a gripping , beautifully acted film", "dull", "i wanted to like it , but the plot makes no sense at all",
         "not bad", "the worst movie of the year , and the longest", "fun", "an unknown word: zxqwv", "it is what it is"]


def _probs(sess: ort.InferenceSession, rows: list[np.ndarray], pad_id: int) -> np.ndarray:
    """Softmax of the rows run as one batch padded to the longest."""
    tokens = np.full((len(rows), max(map(len, rows))), pad_id, np.int64)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
    z = sess.run(None, {TOKENS: tokens, LENGTHS: np.array([len(r) for r in rows])})[0].astype(np.float64)
    return np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)


def test_static_int8_classifier_rows_are_computed_alone_and_follow_fp32(tmp_path):
    """Padded among longer rows and batched with others, a row gets what it gets alone (float summation order
    aside); the int8 graph's probabilities follow fp32's (a wrong gate order or reversal would not)."""
    src = ROOT / "models" / "sst2-bilstm" / "1"
    static_int8(src / MODEL_FILE, tmp_path / MODEL_FILE)
    tok = Tokenizer.load(src / TOKENIZER_FILE)
    fp32, int8 = make_session(src / MODEL_FILE, 1, 1), make_session(tmp_path / MODEL_FILE, 1, 1)
    rows = [tok.encode(t) for t in TEXTS]
    batched = _probs(int8, rows, tok.pad_id)
    alone = np.concatenate([_probs(int8, [r], tok.pad_id) for r in rows])
    assert np.abs(batched - alone).max() <= ROW_TOL
    assert np.abs(batched - _probs(fp32, rows, tok.pad_id)).max() < 0.05


def test_a_classifier_whose_lstm_input_has_no_known_range_is_refused(model_repo, tmp_path):
    """The fixed activation scale needs the input's range: an embedding scaled by a computed factor has none."""
    src = _copy_v1(model_repo, "tiny-sentiment", tmp_path)
    model = onnx.load(str(src / MODEL_FILE))
    embed = next(n for n in model.graph.node if n.op_type == "Gather" and n.input[1] == TOKENS)
    scaled = "scaled_embedding"
    for node in model.graph.node:
        node.input[:] = [scaled if i == embed.output[0] else i for i in node.input]
    model.graph.node.insert(list(model.graph.node).index(embed) + 1,
                            helper.make_node("Mul", [embed.output[0], embed.output[0]], [scaled]))
    onnx.save(model, str(src / MODEL_FILE))
    with pytest.raises(UnsupportedGraphError, match="cannot bound"):
        quantize_artifact(src, src.parent / "2", "static")
    assert not (src.parent / "2" / MODEL_FILE).exists()


def test_a_static_int8_classifier_passes_its_gate_and_classifies_batched_as_alone(tmp_path):
    """sst2-bilstm's static int8 version, served by default: texts of one request are grouped by length in the
    server, and each gets what it gets alone."""
    src = tmp_path / "models" / "sst2-bilstm" / "1"
    shutil.copytree(ROOT / "models" / "sst2-bilstm" / "1", src)
    q = quantize_artifact(src, src.parent / "2").evaluation["quantization"]
    assert q["method"] == "static" and q["gate"]["fp32"] - q["gate"]["int8"] <= 0.005
    running = Running(settings(tmp_path / "models"))
    try:
        request = pb.ClassifyRequest(model="sst2-bilstm", texts=TEXTS)
        together = running.stub.Classify(request, timeout=60)
        alone = [running.stub.Classify(pb.ClassifyRequest(model="sst2-bilstm", texts=[t]), timeout=60).results[0]
                 for t in TEXTS]
        assert together.version == 2
        for r, a in zip(together.results, alone, strict=True):
            assert r.label == a.label
            np.testing.assert_allclose(r.probabilities, a.probabilities, atol=ROW_TOL)
        assert [r.label for r in together.results[:2]] == ["positive", "negative"]
    finally:
        running.stop()


def test_quantize_builds_the_generated_code_corpus_its_gate_scores(tmp_path):
    """python-lstm's validation text is this machine's standard library, gathered at run time and never committed:
    a checkout without it still quantizes (the corpus is rebuilt and matches the sha256 meta.json recorded)."""
    src = tmp_path / "models" / "python-lstm" / "1"
    shutil.copytree(ROOT / "models" / "python-lstm" / "1", src)
    meta = quantize_artifact(src, src.parent / "2", data_root=tmp_path)
    assert (tmp_path / pycorpus.CORPUS).is_file()
    gate = meta.evaluation["quantization"]["gate"]
    assert gate["val_chars"] == 30_000 and gate["int8"] - gate["fp32"] <= 0.01


def test_a_rebuilt_code_corpus_that_differs_is_refused_saying_why(tmp_path, monkeypatch):
    src = tmp_path / "models" / "python-lstm" / "1"
    shutil.copytree(ROOT / "models" / "python-lstm" / "1", src)

    def another_python(out: Path) -> None:  # what another Python's standard library would give: other bytes
        out.parent.mkdir(parents=True)
        out.write_text("import os\n")

    monkeypatch.setattr(pycorpus, "build", another_python)
    with pytest.raises(DataError, match="rebuilt from this machine's Python standard library"):
        quantize_artifact(src, src.parent / "2", data_root=tmp_path)
    assert not (src.parent / "2" / MODEL_FILE).exists()


@pytest.mark.parametrize("name", ["shakespeare-lstm", "shakespeare-gru", "python-lstm"])
def test_bundled_static_int8_versions_passed_and_are_served_by_default(tmp_path, name):
    shutil.copytree(ROOT / "models" / name, tmp_path / name)
    repo = Repository.load(tmp_path)
    q = repo.get(name).meta.evaluation["quantization"]
    latest = max(int(v.name) for v in (tmp_path / name).iterdir() if v.name.isdigit())
    assert repo.get(name).version == latest and repo.get(name).meta.precision == "int8"
    assert repo.trace_version(name) == int(q["from_version"])  # Trace reads the fp32 graph it was made from
    assert q["method"] == "static" and q["seeded_text_batch_independent"]
    assert q["checks"]["prefill_vs_steps_max_prob_diff"] == 0 and q["gate"]["int8"] - q["gate"]["fp32"] <= 0.01


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
