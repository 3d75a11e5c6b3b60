"""Interpretable cells: the numpy trace equals torch, the detectors are right on hand-made text, the scores are
the textbook statistics, and the cell search writes its report, pictures and page."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from service.interpret import cells, features
from service.interpret.trace import Tracer
from tests.support.data import SHAKESPEARE, need, train_and_export
from tests.support.torch_reference import torch_activations
from training import pycorpus
from training.checkpoint import load_checkpoint, model_of

TOL = 1e-4
TEXT = 'ROMEO:\nHe said "so (it) [is]" and went.\n\nJULIET:\nAy~ me!\n'  # "~" is outside the vocabulary


def _ckpt(model_repo, name):
    return model_repo.parent / "runs" / name / "last.pt"


@pytest.fixture(scope="module")
def rnn_repo(tmp_path_factory):
    """A tiny vanilla tanh RNN beside the session's LSTM and GRU (same layout: <tmp>/models and <tmp>/runs)."""
    need(SHAKESPEARE)
    tmp = tmp_path_factory.mktemp("rnn")
    train_and_export(tmp, "tiny-rnn", {"task": "char_lm", "data.path": SHAKESPEARE, "model.cell": "rnn",
                                        "model.n_layer": 2, "model.n_embd": 16, "model.hidden_size": 32, "batch_size": 8,
                                        "seq_len": 32, "max_steps": 10, "eval_interval": 10, "sample_interval": 0,
                                        "checkpoint_interval": 10})
    return tmp / "models"


@pytest.mark.parametrize("name", ["tiny-lstm", "tiny-gru", "tiny-rnn"])
def test_numpy_trace_of_the_artifact_equals_torch(model_repo, rnn_repo, name):
    repo = rnn_repo if name == "tiny-rnn" else model_repo
    model, tok = model_of(load_checkpoint(_ckpt(repo, name)))
    tracer = Tracer.load(repo / name / "1" / "model.onnx")
    ids = np.stack([tok.encode(TEXT), tok.encode(TEXT[::-1])])  # (2, T): a batch, two different texts
    want, got = torch_activations(model, ids), tracer.run(ids)
    assert set(got) == set(want) - {"candidate"}
    for q in got:
        assert got[q].shape == want[q].shape == (2, 2, len(TEXT), 32)
        assert np.abs(got[q] - want[q]).max() < TOL, q
    if name == "tiny-lstm":  # the reference gates are the ones that made torch's cell state
        c_prev = np.concatenate([np.zeros_like(want["cell"][:, :, :1]), want["cell"][:, :, :-1]], axis=2)
        c = want["forget_gate"] * c_prev + want["input_gate"] * want["candidate"]
        assert np.abs(c - want["cell"]).max() < 1e-5


def test_detectors_on_hand_made_text():
    assert features.in_double_quotes('say "hi" ok').tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert features.bracket_depth("a(b[c])d)").tolist() == [0, 1, 1, 2, 2, 1, 0, 0, 0]
    assert features.line_position("ab\ncd").tolist() == [1, 2, 0, 1, 2]
    assert features.indentation("x\n    y\n\tz").tolist() == [0, 0, 1, 2, 3, 4, 4, 0, 4, 4]
    assert features.block_indentation("  x\n    y\nz").tolist() == [0, 0, 2, 2, 2, 2, 2, 2, 4, 4, 0]

    code = 'a = "x(#)" # c "q"\nb = (1, \'\'\'s\ns\'\'\', "\\"")\n'
    string, comment, depth = features.python_lexer(code)
    inside = "".join(ch for ch, s in zip(code, string, strict=True) if s)
    assert inside == '"x(#)' + "'''s\ns''" + '"\\"'  # a closing quote is outside; escapes stay inside
    assert "".join(ch for ch, s in zip(code, string, strict=True) if s == 3) == "'''s\ns''"
    short = features.compute(code, ["in_short_string"])["in_short_string"]
    assert np.isnan(short[code.index("s\ns")]) and short[code.index("x(#)")] == 1 and short[0] == 0
    assert "".join(ch for ch, c in zip(code, comment, strict=True) if c) == '# c "q"'
    assert depth[code.index("(#)") + 1] == 0  # brackets in strings do not nest
    assert depth[code.index("(1")] == 1 and depth[code.index("s\ns") + 2] == 1 and depth[len(code) - 2] == 0

    play = "First Citizen:\nBefore we proceed.\nSpeak: speak.\n\nAll:\nResolved.\n"
    kinds = [0, 1, 1, None, 0, 1, None]  # name, speech, speech ("Speak:" follows a speech line), blank, name, speech
    want = np.concatenate([[np.nan if k is None else k] * len(line) + [np.nan]
                           for line, k in zip(play.split("\n"), kinds, strict=True)])[: len(play)]
    np.testing.assert_array_equal(features.speech_line(play), want)
    with pytest.raises(ValueError, match="unknown feature"):
        features.compute("x", ["nope"])


def test_auc_and_correlation_are_the_textbook_statistics():
    X = np.array([[1, 4, 7], [2, 3, 7], [3, 2, 7], [4, 1, 7]], float)
    y = np.array([False, False, True, True])
    assert cells.auc(X, y).tolist() == [1.0, 0.0, 0.5]  # perfect, reversed, all tied
    rng = np.random.default_rng(0)
    X, y = rng.integers(0, 5, (60, 4)).astype(float), rng.random(60) < 0.4  # many ties
    pos, neg = X[y], X[~y]
    brute = [np.mean([(p > n) + 0.5 * (p == n) for p in pos[:, u] for n in neg[:, u]]) for u in range(4)]
    assert np.allclose(cells.auc(X, y), brute)
    assert np.allclose(cells.pearson(X, y.astype(float)), [np.corrcoef(X[:, u], y)[0, 1] for u in range(4)])


def test_cell_search_writes_report_pictures_and_page(model_repo, tmp_path):
    out = tmp_path / "cells"
    report = cells.search(model_repo / "tiny-lstm" / "1", out, corpus=str(SHAKESPEARE), chars=4000,
                          names=["line_position", "speech_line", "in_quotes"], show=300, top=2)
    saved = json.loads((out / "cells.json").read_text())
    assert saved["features"] == json.loads(json.dumps(report["features"]))
    line = saved["features"]["line_position"]
    assert len(line["top"]) == 2 and abs(line["top"][0]["r"]) >= abs(line["top"][1]["r"]) > 0
    assert 0 <= saved["features"]["speech_line"]["top"][0]["auc"] <= 1
    assert "skipped" in saved["features"]["in_quotes"]  # the opening of tiny shakespeare has no double quotes
    gates = saved["gates"]
    assert set(gates) == {"input_gate", "forget_gate", "output_gate"} and len(gates["forget_gate"]) == 2
    assert all(0 <= v <= 1 for g in gates.values() for s in g for v in s["left"] + s["right"])
    for png in ("line_position.png", "speech_line.png", "gates.png"):
        img = plt.imread(out / png)
        assert img.shape[0] > 100 and img[..., :3].std() > 0.05, png  # a picture, not a blank canvas
    page = (out / "cells.html").read_text()
    assert "speech_line: layer" in page and "<script" in page and "http" not in page.split("<body>")[1]


def test_code_corpus_is_built_from_library_source(tmp_path):
    root = tmp_path / "lib"
    (root / "pkg").mkdir(parents=True)
    (root / "test").mkdir()
    (root / "a.py").write_text("def f(x):\n    return 'x'\n")
    (root / "pkg" / "b.py").write_text("# b\nX = (1, 2)\n")
    (root / "test" / "t.py").write_text("assert True\n")
    (root / "u.py").write_text("s = 'é'\n")  # not ASCII: left out
    manifest = pycorpus.build(tmp_path / "out.txt", root=root)
    text = (tmp_path / "out.txt").read_text()
    assert sorted(text.split("\n\n")) == ["", "# b\nX = (1, 2)", "def f(x):\n    return 'x'"]
    paths = json.loads((tmp_path / "out.txt.json").read_text())["paths"]
    assert manifest["files"] == 2 and sorted(paths) == ["a.py", "pkg/b.py"]


def test_tracer_refuses_a_cell_it_does_not_model(model_repo, tmp_path):
    import onnx
    from onnx import helper

    from service.errors import FailedPrecondition

    graph = onnx.load(str(model_repo / "tiny-lstm" / "1" / "model.onnx"))
    next(n for n in graph.graph.node if n.op_type == "LSTM").attribute.append(helper.make_attribute("clip", 3.0))
    onnx.save(graph, str(tmp_path / "model.onnx"))
    with pytest.raises(FailedPrecondition, match=r"LSTM node .* uses options the tracer does not model"):
        Tracer.load(tmp_path / "model.onnx")
