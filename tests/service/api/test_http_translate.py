"""Translate and TranslateBatch over HTTP against a real server on port 0: the same translations and alignments as
gRPC, whole or as server-sent events; bad input refused with its status and the field named, as /v1/generate."""

from __future__ import annotations

import json

import pytest

from tests.service.api.test_translate import MODEL, VAL, slow_steps
from tests.support.harness import pb
from tests.support.http_client import call, event_stream, post

LIMITS = {"max_source_bytes": 1000, "max_source_tokens": 120, "max_beam_size": 5, "max_translate_texts": 8,
          "max_tokens_limit": 500}


@pytest.fixture(scope="module")
def translating(serve):
    return serve(max_streams=16, max_queue=16, **LIMITS)


def _grpc(running, text: str, **fields) -> list[pb.TranslateResponse]:
    return list(running.stub.Translate(pb.TranslateRequest(model=MODEL, text=text, **fields), timeout=60))


def _alignment(message: pb.Alignment) -> dict:
    return {"source_tokens": list(message.source_tokens), "target_tokens": list(message.target_tokens),
            "weights": pytest.approx(list(message.weights))}


@pytest.mark.parametrize("beam", [1, 3])
def test_translate_equals_grpc_whole_and_streamed_with_its_alignment(translating, beam):
    fields = {"beam_size": beam, "return_attention": True}
    replies = _grpc(translating, VAL[5], **fields)
    text, finished = "".join(r.text for r in replies), replies[-1].finished
    body = {"model": MODEL, "text": VAL[5], **fields}

    status, _, whole = post(translating.http, "/v1/translate", body)
    assert status == 200 and whole["text"] == text
    assert whole["finished"]["finish_reason"] == pb.FinishReason.Name(finished.finish_reason)
    assert whole["finished"]["usage"]["generated_tokens"] == finished.usage.generated_tokens
    assert whole["finished"]["alignment"] == _alignment(finished.alignment)

    with event_stream(translating.http, "/v1/translate", {**body, "stream": True, "flush_chars": 1}) as (r, events):
        assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream")
        messages = [json.loads(data) for _, data in events]
    assert "".join(m["text"] for m in messages) == text
    assert all("finished" not in m for m in messages[:-1])
    assert messages[-1]["finished"]["alignment"] == _alignment(finished.alignment)


def test_a_translation_streams_in_one_event_per_chunk(translating):
    text = "".join(r.text for r in _grpc(translating, VAL[3], max_tokens=8))
    with slow_steps(translating, 0.02), event_stream(translating.http, "/v1/translate", {
            "model": MODEL, "text": VAL[3], "max_tokens": 8, "stream": True, "flush_chars": 1}) as (_, events):
        messages = [json.loads(data) for _, data in events]
    assert "".join(m["text"] for m in messages) == text
    assert len(messages) >= 3, "the translation came in fewer than three events: it did not stream"
    assert all(m["text"] for m in messages[:-1])  # every event before the last carries text


def test_translate_batch_equals_grpc_in_order(translating):
    texts = [VAL[0], VAL[1], VAL[2].split()[0]]
    native = translating.stub.TranslateBatch(pb.TranslateBatchRequest(model=MODEL, texts=texts, beam_size=2), timeout=60)
    status, _, reply = post(translating.http, "/v1/translate_batch", {"model": MODEL, "texts": texts, "beam_size": 2})
    assert status == 200 and reply["version"] == 1
    assert [t["text"] for t in reply["translations"]] == [t.text for t in native.translations]
    assert [t["finished"]["usage"]["source_tokens"] for t in reply["translations"]] == [
        t.finished.usage.source_tokens for t in native.translations]


ERRORS = {  # route -> body -> (status, code, field the message starts with)
    "/v1/translate": {
        "empty text": ({"text": ""}, 400, "INVALID_ARGUMENT", "text"),
        "text over max_source_bytes": ({"text": "ä" * 501}, 400, "INVALID_ARGUMENT", "text"),
        "text over max_source_tokens": ({"text": "ein" + " ein" * 120}, 400, "INVALID_ARGUMENT", "text"),
        "text not a string": ({"text": 5}, 400, "INVALID_ARGUMENT", "text"),
        "beam too wide": ({"text": "Hund", "beam_size": 6}, 400, "INVALID_ARGUMENT", "beam_size"),
        "beam a string": ({"text": "Hund", "beam_size": "wide"}, 400, "INVALID_ARGUMENT", "beam_size"),
        "negative beam": ({"text": "Hund", "beam_size": -1}, 400, "INVALID_ARGUMENT", "beam_size"),
        "penalty out of range": ({"text": "Hund", "length_penalty": 11}, 400, "INVALID_ARGUMENT", "length_penalty"),
        "attention not a bool": ({"text": "Hund", "return_attention": "yes"}, 400, "INVALID_ARGUMENT",
                                 "return_attention"),
        "unknown field": ({"text": "Hund", "texts": ["Hund"]}, 400, "INVALID_ARGUMENT", "texts"),
        "stream not bool": ({"text": "Hund", "stream": 1}, 400, "INVALID_ARGUMENT", "stream"),
        "unknown model": ({"text": "Hund", "model": "nope"}, 404, "NOT_FOUND", None),
        "wrong kind": ({"text": "Hund", "model": "tiny-lstm"}, 409, "FAILED_PRECONDITION", None),
    },
    "/v1/translate_batch": {
        "no texts": ({"texts": []}, 400, "INVALID_ARGUMENT", "texts"),
        "too many texts": ({"texts": ["Hund"] * 9}, 400, "INVALID_ARGUMENT", "texts"),
        "an empty text": ({"texts": ["Hund", ""]}, 400, "INVALID_ARGUMENT", "texts[1]"),
        "an oversized text": ({"texts": ["ä" * 501]}, 400, "INVALID_ARGUMENT", "texts[0]"),
        "texts not a list": ({"texts": "Hund"}, 400, "INVALID_ARGUMENT", "texts"),
        "a text not a string": ({"texts": ["Hund", 3]}, 400, "INVALID_ARGUMENT", "texts"),
        "streaming asked of a unary method": ({"texts": ["Hund"], "stream": True}, 400, "INVALID_ARGUMENT", "stream"),
        "flush fields are Translate's": ({"texts": ["Hund"], "flush_chars": 1}, 400, "INVALID_ARGUMENT", "flush_chars"),
        "wrong kind": ({"texts": ["Hund"], "model": "tiny-sentiment"}, 409, "FAILED_PRECONDITION", None),
    },
}
CASES = [(route, case) for route, cases in ERRORS.items() for case in cases]


@pytest.mark.parametrize(("route", "case"), CASES, ids=[f"{r.rsplit('/', 1)[1]}: {c}" for r, c in CASES])
def test_errors_have_their_status_and_name_the_field(translating, route, case):
    body, status, code, field = ERRORS[route][case]
    streams = (False, True) if route == "/v1/translate" and "stream" not in body else (None,)
    for stream in streams:
        sent = {"model": MODEL, **body, **({} if stream is None else {"stream": stream})}
        got, headers, reply = post(translating.http, route, sent)
        assert got == status and headers["content-type"] == "application/json", reply
        assert reply["error"]["code"] == code and reply["error"]["param"] == field, reply
        assert field is None or reply["error"]["message"].startswith(f"{field}:"), reply


@pytest.mark.parametrize("route", ["/v1/translate", "/v1/translate_batch"])
@pytest.mark.parametrize("body", [b'{"model": "tiny-translator", "text":', b"\xff\xfe", b"[1]", b"null"])
def test_malformed_bodies_are_400_never_a_traceback(translating, route, body):
    status, headers, reply = call(translating.http, "POST", route, body)
    assert status == 400 and headers["content-type"] == "application/json"
    assert reply["error"]["param"] == "request" and "Traceback" not in json.dumps(reply)


def test_translations_are_counted_with_the_protocol(translating):
    def count(method: str) -> float:
        return translating.metric("rnnserve_requests_total", method=method, code="OK", protocol="http")
    before = count("Translate"), count("TranslateBatch")
    assert post(translating.http, "/v1/translate", {"model": MODEL, "text": "Hund"})[0] == 200
    assert post(translating.http, "/v1/translate_batch", {"model": MODEL, "texts": ["Hund"]})[0] == 200
    assert (count("Translate"), count("TranslateBatch")) == (before[0] + 1, before[1] + 1)


def test_a_translation_client_that_goes_away_frees_its_rows(translating):
    active = lambda: translating.metric("rnnserve_active_streams", model=MODEL)  # noqa: E731
    cancelled = lambda: translating.metric("rnnserve_requests_total", method="Translate", code="CANCELLED",  # noqa: E731
                                           protocol="http")
    before = cancelled()
    with slow_steps(translating, 0.2):  # the translation would take seconds to end by itself
        with event_stream(translating.http, "/v1/translate", {"model": MODEL, "text": VAL[0], "stream": True,
                                                              "flush_chars": 1}) as (_, events):
            next(events)
            assert active() == 1
        assert translating.wait_for(lambda: active() == 0)
    assert translating.wait_for(lambda: cancelled() == before + 1)
