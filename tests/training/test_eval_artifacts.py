"""eval and sample take what users have: a model directory (run by ONNX Runtime) as well as a checkpoint; every
wrong path is one clear line; a classifier's --data file is read in its own format."""

from __future__ import annotations

import json

import pytest
import torch

from service.artifact.corpus import read_sentences, sentence_format
from tests.support.data import ROOT, SST2_SENTENCES
from training.__main__ import main

LABELS = {"0": "negative", "1": "positive"}


def _run(capsys, *argv) -> str:
    main([*argv, "--threads=1"])
    return capsys.readouterr().out


def _error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--threads=1"])
    message = str(exit_.value.code)
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in message
    return message


def test_eval_of_a_model_directory_equals_eval_of_its_checkpoint(model_repo, capsys):
    artifact = model_repo / "tiny-lstm" / "1"
    ckpt = model_repo.parent / "runs" / "tiny-lstm" / "last.pt"
    onnx = json.loads(_run(capsys, "eval", str(artifact)))
    torch_ = json.loads(_run(capsys, "eval", str(ckpt)))
    assert onnx["source"] == "artifact" and torch_["source"] == "checkpoint"
    assert onnx["chars"] == torch_["chars"] > 100_000  # the whole validation split
    assert onnx["loss"] == pytest.approx(torch_["loss"], abs=1e-4)
    meta = json.loads((artifact / "meta.json").read_text())
    assert onnx["loss"] == pytest.approx(meta["evaluation"]["val_loss"], abs=1e-4)
    # one of the directory's files names the directory too
    assert json.loads(_run(capsys, "eval", str(artifact / "model.onnx")))["loss"] == onnx["loss"]


def test_classifier_directory_evaluates_like_its_checkpoint(model_repo, capsys):
    artifact = model_repo / "tiny-sentiment" / "1"
    onnx = json.loads(_run(capsys, "eval", str(artifact)))
    torch_ = json.loads(_run(capsys, "eval", str(model_repo.parent / "runs" / "tiny-sentiment" / "last.pt")))
    assert onnx["confusion"] == torch_["confusion"] and onnx["examples"] == 872
    assert onnx["loss"] == pytest.approx(torch_["loss"], abs=1e-5)


def test_sample_from_a_model_directory_matches_the_checkpoint(model_repo, capsys):
    args = ["-n", "40", "--seed", "5", "--prime", "ROMEO:"]
    onnx = _run(capsys, "sample", str(model_repo / "tiny-gru" / "1"), *args)
    torch_ = _run(capsys, "sample", str(model_repo.parent / "runs" / "tiny-gru" / "last.pt"), *args)
    assert onnx == torch_ and onnx.startswith("ROMEO:") and len(onnx) == len("ROMEO:") + 40 + 1


def test_every_wrong_path_is_one_clear_line(model_repo, tmp_path, capsys):
    graph = tmp_path / "alone.onnx"
    graph.write_bytes((model_repo / "tiny-lstm" / "1" / "model.onnx").read_bytes())
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    cases = {
        str(tmp_path / "missing"): "no such checkpoint or model directory",
        str(model_repo / "tiny-lstm"): "is a model with versions [1]: pass one, e.g.",
        str(model_repo.parent / "runs" / "tiny-lstm"): "is a training run: pass its checkpoint",
        str(tmp_path): "is a directory but not a model",
        str(graph): "is a graph alone: pass the model directory",
        str(text): "not a training checkpoint (not a file torch.save writes)",
        str(other): "not a training checkpoint (it holds no config",
    }
    for path, needle in cases.items():
        assert needle in _error(capsys, "eval", path), path
    assert "tiny-sentiment/1 is a classifier: sample needs a char_lm" in _error(
        capsys, "sample", str(model_repo / "tiny-sentiment" / "1"))


def test_a_label_line_file_is_read_as_one_whatever_the_recipe_said(model_repo, tmp_path, capsys):
    # tiny-sentiment's recipe reads label lines; SST-2's recipes say tsv. A file is read in its own format.
    lines = tmp_path / "sentences.tsv"  # '<label> <sentence>' lines, under a .tsv name
    lines.write_text((SST2_SENTENCES / "stsa.binary.dev").read_text(encoding="utf-8"), encoding="utf-8")
    artifact = str(model_repo / "tiny-sentiment" / "1")
    auto = json.loads(_run(capsys, "eval", artifact, "--data", str(lines)))
    assert auto["examples"] == 872
    assert json.loads(_run(capsys, "eval", artifact, "--data", str(lines), "--format", "label_line")) == auto
    assert "header must name 'sentence' and 'label'" in _error(capsys, "eval", artifact, "--data", str(lines),
                                                               "--format", "tsv")


def test_sentence_format_is_detected_from_the_first_line(tmp_path):
    tsv, txt = tmp_path / "a.tsv", tmp_path / "a.txt"
    assert sentence_format(txt, "sentence\tlabel", LABELS) == "tsv"
    assert sentence_format(tsv, "label\tsentence\tid", LABELS) == "tsv"
    assert sentence_format(tsv, "1 a fine film", LABELS) == "label_line"
    assert sentence_format(txt, "text\tscore", LABELS) == "tsv"  # a broken header still gets the TSV error
    assert sentence_format(tsv, "great film", LABELS) == "tsv"
    assert sentence_format(txt, "great film", LABELS) == "label_line"
    tsv.write_text("1 a fine film\n0 dull\n")
    assert read_sentences(tsv, LABELS).labels.tolist() == [1, 0]


def test_the_bundled_classifier_evaluates_from_its_directory_on_a_label_line_file(capsys):
    # The report: its recipe says tsv, and eval of models/sst2-bilstm/1 found "no such checkpoint".
    artifact = ROOT / "models" / "sst2-bilstm" / "1"
    meta = json.loads((artifact / "meta.json").read_text())
    assert meta["training"]["config"]["data"]["format"] == "tsv"
    got = json.loads(_run(capsys, "eval", str(artifact), "--data", str(SST2_SENTENCES / "stsa.binary.dev")))
    assert got["examples"] == 872 and got["accuracy"] == pytest.approx(meta["evaluation"]["val_accuracy"], abs=1e-4)
