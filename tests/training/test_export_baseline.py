"""Export records the Kneser-Ney baseline and the margin over it, and drops torch's wrong batch-size warning only."""

from __future__ import annotations

import warnings

import pytest

from service.artifact import META_FILE, Meta
from service.artifact.tokenizer import Tokenizer
from tests.support.data import SHAKESPEARE
from training.baseline import kn_baseline
from training.config import load_config
from training.data import CharCorpus
from training.export import export_checkpoint
from training.onnx_warnings import BATCH_WARNING, batch_warning_unless_it_fails
from training.train import train


def _trained_lm(tmp_path, corpus) -> str:
    args = ["--task=char_lm", f"--data.path={corpus}", "--threads=1", "--model.n_layer=1", "--model.n_embd=8",
            "--model.hidden_size=16", "--batch_size=4", "--seq_len=16", "--max_steps=3", "--eval_interval=3",
            "--sample_interval=0", f"--out_dir={tmp_path / 'run'}"]
    train(load_config(None, args), progress=False)
    return tmp_path / "run" / "last.pt"


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:40000], encoding="utf-8")
    return path


def test_lm_export_records_the_baseline_on_the_models_own_split(tmp_path, corpus):
    meta = export_checkpoint(_trained_lm(tmp_path, corpus), tmp_path / "m" / "1")
    ev = meta.evaluation
    tok = Tokenizer.load(tmp_path / "m" / "1" / "tokenizer.json")
    want = kn_baseline(CharCorpus.from_file(corpus, 0.1, tokenizer=tok))
    assert ev["baseline"] == want and 1 <= ev["baseline"]["order"] <= 9
    assert ev["margin_over_baseline"] == pytest.approx(want["val_loss"] - ev["val_loss"])
    assert ev["margin_over_baseline"] < 0  # three steps of training lose to counting
    assert Meta.load(tmp_path / "m" / "1" / META_FILE).evaluation["baseline"]["val_loss"] == want["val_loss"]


def test_export_without_the_corpus_warns_and_still_writes_the_artifact(tmp_path, corpus):
    ckpt = _trained_lm(tmp_path, corpus)
    corpus.write_text("other text " * 1000, encoding="utf-8")
    with pytest.warns(UserWarning, match="changed since training"):
        meta = export_checkpoint(ckpt, tmp_path / "m" / "1")
    assert "baseline" not in meta.evaluation and "val_loss" in meta.evaluation
    corpus.unlink()
    with pytest.warns(UserWarning, match="not there"):
        assert "baseline" not in export_checkpoint(ckpt, tmp_path / "m" / "2").evaluation


def test_export_does_not_repeat_torchs_batch_size_warning(tmp_path, corpus):
    ckpt = _trained_lm(tmp_path, corpus)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_checkpoint(ckpt, tmp_path / "m" / "1")
    assert not [w for w in caught if BATCH_WARNING in str(w.message)]


def test_only_the_batch_warning_of_a_block_that_succeeded_is_dropped():
    with pytest.warns(UserWarning) as shown:
        with batch_warning_unless_it_fails():
            warnings.warn(BATCH_WARNING + ", with a variable length with LSTM ...", UserWarning, stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in shown] == ["something else"]
    with pytest.warns(UserWarning) as shown, pytest.raises(RuntimeError):
        with batch_warning_unless_it_fails():
            warnings.warn(BATCH_WARNING + " ...", UserWarning, stacklevel=1)
            raise RuntimeError("verification failed")
    assert [str(w.message) for w in shown] == [BATCH_WARNING + " ..."]
