"""The HTTP edge's JSON: to_json's fast path for text-only messages equals json_format's mapping, a stream's messages
merge as the proto says they continue each other, and every kind's RPC has its route."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from service.api.http.edge import event
from service.api.http.messages import to_json
from service.api.http.native import merged, path_of
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.kinds.base import served_methods

MESSAGES = [
    pb.GenerateResponse(text="ROMEO:\n\"ä\U0001f600\x00"), pb.GenerateResponse(),
    pb.GenerateResponse(text="ab", logprobs=[-0.1234567, -2.5]),
    pb.GenerateResponse(finished=pb.Finished(finish_reason=pb.FINISH_REASON_STOP, usage=pb.Usage(generated_chars=3))),
    pb.TranslateResponse(text="A dog"),
    pb.TranslateResponse(finished=pb.TranslateFinished(alignment=pb.Alignment(source_tokens=["▁Hund"], weights=[1.0]))),
    pb.TraceResponse(steps=[pb.TraceStep(char="a")]), pb.ModelInfo(name="m", description="d"),
    pb.ModelInfo(name="m", sizes={"n_layer": 2}), pb.TranslateBatchResponse(translations=[pb.Translation(text="x")]),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_to_json_is_the_protos_json_mapping(message):
    expected = json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True, unquote_int64_if_possible=True)
    assert to_json(message) == expected
    assert event(to_json(message)) == event(expected)


def test_the_fast_path_hands_out_fresh_lists():
    first = to_json(pb.GenerateResponse(text="a"))
    first["logprobs"].append(1.0)
    assert to_json(pb.GenerateResponse(text="b")) == {"text": "b", "logprobs": []}


def test_a_streams_messages_merge_into_one_reply():
    generation = [to_json(m) for m in (pb.GenerateResponse(text="ab", logprobs=[-1, -2]),
                                       pb.GenerateResponse(text="c", logprobs=[-3]),
                                       pb.GenerateResponse(finished=pb.Finished(finish_reason=pb.FINISH_REASON_LENGTH)))]
    assert merged(generation) == {"text": "abc", "logprobs": [-1.0, -2.0, -3.0],
                                  "finished": generation[-1]["finished"]}
    trace = [to_json(m) for m in (pb.TraceResponse(header=pb.TraceHeader(cell="lstm")),
                                  pb.TraceResponse(steps=[pb.TraceStep(char="a")]),
                                  pb.TraceResponse(steps=[pb.TraceStep(char="b")]))]
    assert merged(trace)["header"] == trace[0]["header"]
    assert [s["char"] for s in merged(trace)["steps"]] == ["a", "b"]


def test_every_method_a_kind_serves_has_its_route():
    assert {m: path_of(m) for m in served_methods()} == {
        "Generate": "/v1/generate", "Trace": "/v1/trace", "Classify": "/v1/classify", "Translate": "/v1/translate",
        "TranslateBatch": "/v1/translate_batch", "Caption": "/v1/caption", "CaptionBatch": "/v1/caption_batch"}
