"""Translate and TranslateBatch through a real server: the tiny translator's translations equal training's torch-free
ONNX Runtime decode and torch's, alone or batched, greedy or beam; limits and bad input name their field; a
cancelled translation frees its rows; the metrics are read back from the real /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
import numpy as np
import pytest

from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from tests.support.data import MULTI30K
from training.checkpoint import load_checkpoint, model_of
from training.ort_translator import OrtTranslator
from training.search import LengthRule
from training.translate import translate as torch_translate

MODEL = "tiny-translator"
VAL = (MULTI30K / "val.de").read_text(encoding="utf-8").splitlines()[:12] if (MULTI30K / "val.de").exists() else []


@pytest.fixture(scope="module")
def translating(serve):
    return serve(max_streams=16, max_queue=16, max_source_bytes=1000, max_source_tokens=120, max_beam_size=5,
                 max_translate_texts=8, max_tokens_limit=500)


@pytest.fixture(scope="module")
def reference(model_repo) -> OrtTranslator:
    """Training's torch-free decoder over the exported graphs (what export verifies against torch)."""
    return OrtTranslator(model_repo / MODEL / "1")


def _translate(stub, text: str, **fields) -> tuple[str, list[pb.TranslateResponse]]:
    replies = list(stub.Translate(pb.TranslateRequest(model=MODEL, text=text, **fields), timeout=60))
    return "".join(r.text for r in replies), replies


def _error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_greedy_translations_equal_the_ort_reference_and_torch(translating, reference, model_repo):
    model, tok = model_of(load_checkpoint(model_repo.parent / "runs" / MODEL / "last.pt"))
    rule = reference.rule
    served = [_translate(translating.stub, text)[0] for text in VAL]
    assert served == reference.translate(VAL) == torch_translate(model, tok, VAL, LengthRule(rule.a, rule.b))
    assert len(set(served)) > 1  # not one string for every sentence


@pytest.mark.parametrize("beam", [2, 5])
def test_beam_search_equals_the_reference(translating, reference, beam):
    alpha = reference.meta.translator["beam"]["length_penalty"]
    served = [_translate(translating.stub, text, beam_size=beam)[0] for text in VAL[:6]]
    assert served == reference.translate(VAL[:6], beam, alpha)
    with_penalty = [_translate(translating.stub, text, beam_size=beam, length_penalty=0.0)[0] for text in VAL[:6]]
    assert with_penalty == reference.translate(VAL[:6], beam, 0.0)


def test_concurrent_translations_of_different_lengths_equal_each_alone(translating):
    texts = [*VAL, VAL[0] + " " + VAL[1], VAL[2].split()[0]]  # a long and a one-word source too
    alone = [_translate(translating.stub, t)[0] for t in texts]
    with ThreadPoolExecutor(len(texts) + 2) as pool:
        together = list(pool.map(lambda t: _translate(translating.stub, t, flush_chars=1)[0], texts))
        beams = pool.submit(lambda: [_translate(translating.stub, t, beam_size=3)[0] for t in texts[:2]])
    assert together == alone
    batch = translating.stub.TranslateBatch(pb.TranslateBatchRequest(model=MODEL, texts=texts[:8]), timeout=60)
    assert [t.text for t in batch.translations] == alone[:8]
    assert beams.result() == [_translate(translating.stub, t, beam_size=3)[0] for t in texts[:2]]


def test_the_stream_ends_with_one_final_message_with_usage(translating, reference):
    text, replies = _translate(translating.stub, VAL[3], flush_chars=1, flush_ms=1)
    assert replies[-1].HasField("finished") and not any(r.HasField("finished") for r in replies[:-1])
    f = replies[-1].finished
    ids = reference.translate_ids([VAL[3]])[0]
    assert f.version == 1 and text == reference.target.decode(ids, skip_special_tokens=True)
    assert f.usage.source_tokens == len(reference.source.encode(VAL[3]).ids)
    stopped = f.finish_reason == pb.FINISH_REASON_STOP
    assert f.usage.generated_tokens == len(ids) + stopped
    assert 0 < f.usage.time_to_first_token_s <= f.usage.total_time_s and f.usage.queue_time_s >= 0
    assert not f.HasField("alignment")


@pytest.mark.parametrize("beam", [1, 3])
def test_the_alignment_has_a_distribution_over_the_source_per_output_token(translating, reference, beam):
    _, replies = _translate(translating.stub, VAL[5], beam_size=beam, return_attention=True)
    f = replies[-1].finished
    a = f.alignment
    assert list(a.source_tokens) == reference.source.encode(VAL[5]).tokens
    assert len(a.target_tokens) == f.usage.generated_tokens
    assert (a.target_tokens[-1] == "</s>") == (f.finish_reason == pb.FINISH_REASON_STOP)
    weights = np.array(a.weights).reshape(len(a.target_tokens), len(a.source_tokens))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-4)


def test_max_tokens_caps_the_translation(translating):
    _, replies = _translate(translating.stub, VAL[0], max_tokens=2)
    f = replies[-1].finished
    assert f.usage.generated_tokens <= 2
    assert f.finish_reason == pb.FINISH_REASON_LENGTH or f.usage.generated_tokens <= 2


@pytest.mark.parametrize("fields, message", [
    ({"text": ""}, "text: must not be empty"),
    ({"text": "ä" * 501}, "text: 1002 bytes, the limit is 1000"),
    ({"text": "ein" + " ein" * 120}, "text: 121 tokens, the limit is 120"),
    ({"text": "Hund", "beam_size": 6}, "beam_size: must be in 1..5"),
    ({"text": "Hund", "max_tokens": 0}, "max_tokens: must be in 1..500"),
    ({"text": "Hund", "max_tokens": 501}, "max_tokens: must be in 1..500"),
    ({"text": "Hund", "length_penalty": -0.5}, "length_penalty: must be in 0..10"),
    ({"text": "Hund", "length_penalty": float("nan")}, "length_penalty: must be in 0..10"),
    ({"text": "Hund", "flush_chars": 5000}, "flush_chars: must be in 0..4096"),
    ({"text": "Hund", "flush_ms": 20_000}, "flush_ms: must be in 0..10000"),
])
def test_bad_fields_are_invalid_argument_naming_the_field(translating, fields, message):
    err = _error(lambda: _translate(translating.stub, **fields))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(message), err.details()


@pytest.mark.parametrize("texts, message", [
    ([], "texts: must hold at least one text"),
    (["Hund"] * 9, "texts: 9 texts, at most 8 per request"),
    (["Hund", ""], "texts[1]: must not be empty"),
])
def test_bad_batches_are_invalid_argument_naming_the_text(translating, texts, message):
    err = _error(lambda: translating.stub.TranslateBatch(pb.TranslateBatchRequest(model=MODEL, texts=texts), timeout=30))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith(message), err.details()


def test_unknown_models_and_wrong_kinds_are_refused(translating):
    stub = translating.stub
    err = _error(lambda: list(stub.Translate(pb.TranslateRequest(model="no-such", text="Hund"), timeout=30)))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = _error(lambda: list(stub.Translate(pb.TranslateRequest(model="tiny-lstm", text="Hund"), timeout=30)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Translate needs a translator model; 'tiny-lstm' is a char_lm" in err.details()
    err = _error(lambda: list(stub.Generate(pb.GenerateRequest(model=MODEL, prompt="Hund"), timeout=30)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "Generate needs a char_lm model; 'tiny-translator' is a translator" in err.details()


@contextmanager
def slow_steps(running, seconds: float) -> Iterator[None]:
    """Each decoder step of the translator takes at least `seconds`: keeps translations running while a test looks."""
    runner = running.server.host.repo.get(MODEL).runner
    step = runner.step

    def slow(*args):
        time.sleep(seconds)
        return step(*args)

    runner.step = slow
    try:
        yield
    finally:
        del runner.step


def test_a_cancelled_translation_frees_its_rows_at_the_next_step(serve):
    small = serve(max_streams=3, max_queue=4, max_tokens_limit=500)
    active = lambda: small.metric("rnnserve_active_streams", model=MODEL)  # noqa: E731
    queued = lambda: small.metric("rnnserve_queued_requests", model=MODEL, method="Translate")  # noqa: E731
    cancelled = lambda: small.metric("rnnserve_requests_total", method="Translate", code="CANCELLED")  # noqa: E731
    before = cancelled()
    with slow_steps(small, 0.2):  # the beam would take seconds to end by itself
        beam = small.stub.Translate(pb.TranslateRequest(model=MODEL, text=VAL[0], beam_size=3), timeout=60)
        assert small.wait_for(lambda: active() == 1)
        after = small.stub.TranslateBatch.future(pb.TranslateBatchRequest(model=MODEL, texts=[VAL[1]]), timeout=60)
        assert small.wait_for(lambda: queued() == 1)  # the beam holds all three rows
        beam.cancel()
        assert after.result().translations[0].text
    assert small.wait_for(lambda: active() == 0 and queued() == 0 and cancelled() == before + 1)


def test_metrics_count_translations(translating):
    m = translating.metric
    labels = {"model": MODEL, "kind": "translator"}
    before = {name: m(name, **labels) for name in ("rnnserve_time_to_first_token_seconds_count",
                                                   "rnnserve_inter_token_seconds_count", "rnnserve_generated_tokens_total",
                                                   "rnnserve_decode_batch_size_count")}
    waits, encodes = m("rnnserve_queue_wait_seconds_count", model=MODEL, method="Translate"), \
        m("rnnserve_model_call_seconds_count", model=MODEL, phase="encode")
    replies = [_translate(translating.stub, t)[1][-1].finished for t in VAL[:4]]
    generated = sum(f.usage.generated_tokens for f in replies)
    assert translating.wait_for(lambda: m("rnnserve_generated_tokens_total", **labels) - before["rnnserve_generated_tokens_total"]
                                == generated)
    assert m("rnnserve_time_to_first_token_seconds_count", **labels) - before["rnnserve_time_to_first_token_seconds_count"] == 4
    assert m("rnnserve_inter_token_seconds_count", **labels) - before["rnnserve_inter_token_seconds_count"] == generated - 4
    assert m("rnnserve_decode_batch_size_count", **labels) - before["rnnserve_decode_batch_size_count"] == generated
    assert m("rnnserve_queue_wait_seconds_count", model=MODEL, method="Translate") - waits == 4
    assert m("rnnserve_model_call_seconds_count", model=MODEL, phase="encode") - encodes == 4
    assert m("rnnserve_active_streams", model=MODEL) == 0
