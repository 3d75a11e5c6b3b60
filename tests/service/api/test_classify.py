"""Classify: dynamically batched results equal each text run alone, and equal the model run directly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest

from service.artifact.tokenizer import Tokenizer
from tests.support.harness import pb

TEXTS = ["a gripping , beautifully acted film", "dull", "i wanted to like it , but the plot makes no sense at all",
         "not bad", "the worst movie of the year , and the longest", "fun", "an unknown word: zxqwv",
         "it is what it is"]


def _direct(model_dir, text: str) -> np.ndarray:
    tok = Tokenizer.load(model_dir / "tokenizer.json")
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = tok.encode(text)[None, :]
    logits = sess.run(None, {"tokens": ids, "lengths": np.array([ids.shape[1]])})[0][0].astype(np.float64)
    p = np.exp(logits - logits.max())
    return p / p.sum()


def _classify(server, texts: list[str]) -> list[pb.Classification]:
    return list(server.stub.Classify(pb.ClassifyRequest(model="tiny-sentiment", texts=texts), timeout=30).results)


@pytest.mark.slow
def test_batched_results_equal_each_text_alone(server, model_repo):
    alone = [_classify(server, [t])[0] for t in TEXTS]  # one at a time: batches of one
    for t, r in zip(TEXTS, alone, strict=True):
        assert r.label in ("negative", "positive") and list(r.labels) == ["negative", "positive"]
        assert r.label == r.labels[int(np.argmax(r.probabilities))]
        np.testing.assert_allclose(r.probabilities, _direct(model_repo / "tiny-sentiment" / "1", t), atol=1e-6)
        assert abs(sum(r.probabilities) - 1) < 1e-5

    batches = server.metric("rnnserve_classify_batch_size_count", model="tiny-sentiment")
    texts = server.metric("rnnserve_classify_batch_size_sum", model="tiny-sentiment")
    with ThreadPoolExecutor(16) as pool:  # 16 clients at once, each with its own text
        crowd = list(pool.map(lambda i: _classify(server, [TEXTS[i % len(TEXTS)]])[0], range(16)))
    for i, r in enumerate(crowd):
        assert r.label == alone[i % len(TEXTS)].label
        np.testing.assert_allclose(r.probabilities, alone[i % len(TEXTS)].probabilities, atol=1e-6)
    n_batches = server.metric("rnnserve_classify_batch_size_count", model="tiny-sentiment") - batches
    assert server.metric("rnnserve_classify_batch_size_sum", model="tiny-sentiment") - texts == 16
    assert n_batches < 16  # texts of different clients shared model calls

    many = _classify(server, TEXTS)  # one request, many texts: results in order
    for r, a in zip(many, alone, strict=True):
        np.testing.assert_allclose(r.probabilities, a.probabilities, atol=1e-6)
