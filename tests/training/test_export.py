"""Export: every cell exports, verifies itself, refuses to write a failing artifact, loads without torch."""

import json
import subprocess
import sys

import numpy as np
import pytest

from service.artifact import META_FILE, MODEL_FILE, TOKENIZER_FILE, Meta
from tests.support.data import ROOT, SHAKESPEARE, SST2_SENTENCES
from training.config import load_config
from training.train import train

pytestmark = pytest.mark.usefixtures("shared_data")  # trains on ../shared/data

LM = ["--task=char_lm", f"--data.path={SHAKESPEARE}", "--threads=1", "--model.n_layer=2", "--model.n_embd=8",
      "--model.hidden_size=24", "--batch_size=8", "--seq_len=16", "--max_steps=3", "--eval_interval=3",
      "--sample_interval=0"]


def _train(tmp_path, args):
    train(load_config(None, [*args, f"--out_dir={tmp_path / 'run'}"]), progress=False)
    return tmp_path / "run" / "last.pt"


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_lm_export_verifies_and_describes_itself(tmp_path, cell):
    from training.export import export_checkpoint

    meta = export_checkpoint(_train(tmp_path, [*LM, f"--model.cell={cell}"]), tmp_path / "m" / "1")
    assert {p.name for p in (tmp_path / "m" / "1").iterdir()} == {MODEL_FILE, TOKENIZER_FILE, META_FILE}
    checks = meta.evaluation["export_checks"]
    assert checks["max_abs_diff_vs_torch"] < 1e-4 and checks["prefill_vs_steps_max_abs_diff"] < 1e-5
    assert [s.input for s in meta.state] == (["h0", "c0"] if cell == "lstm" else ["h0"])
    assert meta.runtime["intra_op_num_threads"] in (1, 2)
    assert meta.data["train"]["sha256"] and meta.versions["opset"] == 17
    assert Meta.load(tmp_path / "m" / "1" / META_FILE) == meta


def test_classifier_export_verifies_padding_invariance(tmp_path):
    from training.export import export_checkpoint

    ckpt = _train(tmp_path, ["--task=classifier", f"--data.path={SST2_SENTENCES / 'stsa.binary.dev'}",
                             f"--data.val_path={SST2_SENTENCES / 'stsa.binary.dev'}", "--data.level=word",
                             "--threads=1", "--model.n_layer=2", "--model.n_embd=8", "--model.hidden_size=8",
                             "--model.cell=gru", "--max_steps=3", "--eval_interval=3"])
    meta = export_checkpoint(ckpt, tmp_path / "c" / "1")
    assert meta.labels == ["negative", "positive"]
    assert meta.evaluation["export_checks"]["padded_vs_alone_max_abs_diff"] < 1e-5
    assert 0 <= meta.evaluation["val_accuracy"] <= 1


def test_export_refuses_to_write_an_artifact_that_fails_verification(tmp_path, monkeypatch):
    import training.export as ex

    ckpt = _train(tmp_path, LM)
    monkeypatch.setattr(ex, "PARITY_TOL", 0.0)  # no graph can be this exact: verification must fail
    with pytest.raises(ex.ExportError, match="differs from torch"):
        ex.export_checkpoint(ckpt, tmp_path / "m" / "1")
    assert not (tmp_path / "m" / "1").exists() or not any((tmp_path / "m" / "1").iterdir())


def test_export_never_overwrites_a_model(tmp_path):
    from training.export import export_checkpoint

    ckpt = _train(tmp_path, LM)
    export_checkpoint(ckpt, tmp_path / "m" / "1")
    with pytest.raises(FileExistsError):
        export_checkpoint(ckpt, tmp_path / "m" / "1")


@pytest.mark.process
def test_artifact_runs_without_torch_and_samples_like_torch(tmp_path):
    """The served path (ONNX Runtime + the shared sampler, torch import blocked) generates exactly the
    characters the torch model generates for the same seed."""
    from training.checkpoint import load_checkpoint, model_of
    from training.export import export_checkpoint
    from training.sample import generate

    ckpt = _train(tmp_path, LM)
    export_checkpoint(ckpt, tmp_path / "m" / "1")
    model, tok = model_of(load_checkpoint(ckpt))
    want = generate(model, tok, "ROMEO:", 40, temperature=0.9, top_k=10, top_p=0.95, seed=7)
    script = f"""
import sys; sys.modules["torch"] = None  # any torch import now fails
import numpy as np, onnxruntime as ort
from service.artifact import Meta
from service.artifact.tokenizer import Tokenizer
from service.artifact.sampling import sample
d = {str(tmp_path / "m" / "1")!r}
meta, tok = Meta.load(d + "/meta.json"), Tokenizer.load(d + "/tokenizer.json")
sess = ort.InferenceSession(d + "/model.onnx", providers=["CPUExecutionProvider"])
rng = np.random.default_rng(7)
state = {{s.input: np.zeros((s.n_layer, 1, s.hidden_size), np.float32) for s in meta.state}}
out, ids, chars = None, tok.encode("ROMEO:")[None, :], []
for _ in range(40):
    logits, *new = sess.run(None, {{"tokens": ids, **state}})
    state = {{s.input: x for s, x in zip(meta.state, new)}}
    nxt, _ = sample(logits[:, -1], np.array([0.9]), np.array([10]), np.array([0.95]), rng.random(1), banned=tok.unk_id)
    chars.append(tok.token(int(nxt[0]))); ids = nxt[None, :]
print("".join(chars), end="")
"""
    got = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert got == want and len(want) == 40


@pytest.mark.process
@pytest.mark.slow
def test_cli_train_eval_sample_export(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "training", *args], cwd=ROOT, capture_output=True, text=True)

    r = run("train", "--config", "recipes/tiny-lm.json", f"--out_dir={tmp_path}", "--max_steps=4", "--threads=1",
            "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["step"] == 4
    r = run("eval", str(tmp_path / "last.pt"), "--threads=1")
    assert r.returncode == 0 and 0 < json.loads(r.stdout)["bpc"] < 8
    a = run("sample", str(tmp_path / "last.pt"), "-n", "30", "--seed", "3", "--threads=1")
    b = run("sample", str(tmp_path / "last.pt"), "-n", "30", "--seed", "3", "--threads=1")
    assert a.returncode == 0 and a.stdout == b.stdout
    r = run("export", str(tmp_path / "last.pt"), str(tmp_path / "art" / "1"))
    assert r.returncode == 0 and "verified" in r.stdout
    bad = run("train", "--config", "recipes/tiny-lm.json", "--optim.lrr=1")
    assert bad.returncode != 0 and "unknown config key: optim.lrr" in bad.stderr
    assert np.isfinite(json.loads((tmp_path / "art" / "1" / META_FILE).read_text())["evaluation"]["val_loss"])
