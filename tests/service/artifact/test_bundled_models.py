"""The models committed under models/ load and run in ONNX Runtime without torch, and say what they are."""

import json
import re
import subprocess
import sys

import pytest

from service.artifact import META_FILE, Meta
from tests.support.data import FLICKR8K, ROOT, need

MODELS = ROOT / "models"
ALL_ARTIFACTS = sorted(p.parent for p in MODELS.glob(f"*/*/{META_FILE}"))
TRANSLATORS = [p for p in ALL_ARTIFACTS if Meta.load(p / META_FILE).kind == "translator"]
CAPTIONERS = [p for p in ALL_ARTIFACTS if Meta.load(p / META_FILE).kind == "captioner"]
ARTIFACTS = [p for p in ALL_ARTIFACTS if p not in TRANSLATORS + CAPTIONERS]  # one model.onnx each
CODE_CORPORA = {"python-stdlib.txt"}  # char LMs of code are primed with code and must continue with code

RUN_WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None  # any torch import now fails
import numpy as np, onnxruntime as ort
from service.artifact import Meta
from service.artifact.tokenizer import Tokenizer
d, prompt = sys.argv[1], sys.argv[2]
meta, tok = Meta.load(d + "/meta.json"), Tokenizer.load(d + "/tokenizer.json")
sess = ort.InferenceSession(d + "/model.onnx", providers=["CPUExecutionProvider"])
if meta.kind == "char_lm":
    state = {s.input: np.zeros((s.n_layer, 1, s.hidden_size), np.float32) for s in meta.state}
    ids, out = tok.encode(prompt)[None, :], []
    for _ in range(80):  # greedy
        logits, *new = sess.run(None, {"tokens": ids, **state})
        state = {s.input: x for s, x in zip(meta.state, new)}
        logits[0, -1, tok.unk_id] = -np.inf
        ids = logits[:, -1].argmax(1)[:, None]
        out.append(tok.token(int(ids[0, 0])))
    print(json.dumps({"text": "".join(out)}))
else:
    texts = ["a wonderful , moving and beautifully acted film .", "a dull , lifeless and boring mess ."]
    seqs = [tok.encode(t) for t in texts]
    T = max(map(len, seqs))
    tokens = np.full((2, T), tok.pad_id, np.int64)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
    logits = sess.run(None, {"tokens": tokens, "lengths": np.array([len(s) for s in seqs])})[0]
    print(json.dumps({"labels": [meta.labels[i] for i in logits.argmax(1)]}))
"""


def test_bundled_models_exist_and_fit_the_size_budget():
    names = {p.parent.name for p in ALL_ARTIFACTS}
    assert {"shakespeare-lstm", "shakespeare-gru", "sst2-bilstm", "multi30k-de-en"} <= names
    total = sum(f.stat().st_size for f in MODELS.rglob("*") if f.is_file())
    assert total < 100 * 2**20, f"models/ holds {total / 2**20:.1f} MB"  # the issues' budget for all bundled models


@pytest.mark.parametrize("path", ARTIFACTS, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.process
def test_bundled_model_runs_without_torch(path):
    meta = Meta.load(path / META_FILE)
    assert meta.data["train"]["sha256"] and meta.training["config"]["name"] == path.parent.name
    code = meta.data["train"]["name"] in CODE_CORPORA
    prompt = "import os\n\n\ndef " if code else "ROMEO:\n"
    r = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TORCH, str(path), prompt], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    if meta.kind == "char_lm":
        assert meta.evaluation["val_loss"] < 1.7  # a trained model, not noise (uniform would be 4.2)
        if code:
            names = re.findall(r"[A-Za-z_]\w*", out["text"])
            assert len(names) >= 8 and re.match(r"\w+\(.*\):\n", out["text"]), out  # def NAME(ARGS):
            return
        words = out["text"].split()
        assert len(words) >= 8 and sum(w.strip(".,:;!?'").isalpha() for w in words) >= len(words) // 2, out
    else:
        assert meta.evaluation["val_accuracy"] > 0.8
        assert out["labels"] == ["positive", "negative"]


TRANSLATE_WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None  # any torch import now fails
from training.ort_translator import OrtTranslator
print(json.dumps(OrtTranslator(sys.argv[1]).translate(sys.argv[2:])))
"""


@pytest.mark.parametrize("path", TRANSLATORS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_bundled_translator_translates_without_torch(path):
    meta = Meta.load(path / META_FILE)
    assert meta.translator["languages"] == {"source": "de", "target": "en"}
    assert meta.data["train"]["source"]["sha256"] and meta.training["config"]["name"] == path.parent.name
    assert meta.evaluation["export_checks"]["greedy_val_equal_to_torch"] == 1014
    assert meta.evaluation["bleu"]["test"]["greedy"] > 20  # a trained model (an untrained one scores ~0)
    r = subprocess.run([sys.executable, "-c", TRANSLATE_WITHOUT_TORCH, str(path), "Ein Hund rennt über eine Wiese.",
                        "Zwei Männer sitzen auf einer Bank."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    dog, men = json.loads(r.stdout)
    assert "dog" in dog.lower() and "men" in men.lower(), (dog, men)


CAPTION_WITHOUT_TORCH = """
import json, sys
from pathlib import Path
sys.modules["torch"] = None  # any torch import now fails
from training.ort_captioner import OrtCaptioner
print(json.dumps(OrtCaptioner(sys.argv[1]).caption([Path(f).read_bytes() for f in sys.argv[2:]], beam_size=3)))
"""


@pytest.mark.parametrize("path", CAPTIONERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_bundled_captioner_captions_without_torch(path):
    """Two test-split photos (not trained on): two dogs in the snow, a boy jumping into a pool."""
    images = [FLICKR8K / "images" / name for name in ("3385593926_d3e9c21170.jpg", "2677656448_6b7e7702af.jpg")]
    need(*images)
    meta = Meta.load(path / META_FILE)
    assert meta.evaluation["export_checks"]["greedy_dev_equal_to_torch"] == 1000
    assert meta.evaluation["captions"]["test"]["greedy"]["all"]["bleu4"] > 10  # a trained model (untrained: ~0)
    r = subprocess.run([sys.executable, "-c", CAPTION_WITHOUT_TORCH, str(path), *map(str, images)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    dogs, pool = json.loads(r.stdout)
    assert "dog" in dogs and ("pool" in pool or "water" in pool), (dogs, pool)
