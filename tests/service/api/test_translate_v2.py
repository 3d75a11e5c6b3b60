"""The translator over the Open Inference Protocol: BYTES text in, BYTES text out, equal to the native API's;
ModelStreamInfer streams one text's translation decoupled, its last response marked final."""

from __future__ import annotations

import grpc
import pytest

from service.api.v2_params import FINAL, pack_bytes
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb

MODEL = "tiny-translator"
TEXTS = ["Ein Mann schläft in einem grünen Raum auf einem Sofa.", "Zwei Hunde spielen im Schnee."]


@pytest.fixture(scope="module")
def stub(server) -> v2_grpc.GRPCInferenceServiceStub:
    return v2_grpc.GRPCInferenceServiceStub(server.channel)


def _request(texts: list[str], **params: int | float | str) -> v2.ModelInferRequest:
    req = v2.ModelInferRequest(model_name=MODEL, id="t1", inputs=[v2.ModelInferRequest.InferInputTensor(
        name="text", datatype="BYTES", shape=[len(texts)])], raw_input_contents=[pack_bytes([t.encode() for t in texts])])
    for k, v in params.items():
        if isinstance(v, str):
            req.parameters[k].string_param = v
        elif isinstance(v, float):
            req.parameters[k].double_param = v
        else:
            req.parameters[k].int64_param = v
    return req


def _texts(reply: v2.ModelInferResponse) -> list[str]:
    (out,) = reply.outputs
    assert out.name == "translation" and out.datatype == "BYTES"
    raw, texts, i = reply.raw_output_contents[0], [], 0
    while i < len(raw):
        n = int.from_bytes(raw[i : i + 4], "little")
        texts.append(raw[i + 4 : i + 4 + n].decode())
        i += 4 + n
    assert len(texts) == out.shape[0]
    return texts


def _native(server, text: str, **fields) -> str:
    return "".join(r.text for r in server.stub.Translate(pb.TranslateRequest(model=MODEL, text=text, **fields), timeout=60))


def test_metadata_and_config_describe_text_in_and_out(stub):
    meta = stub.ModelMetadata(v2.ModelMetadataRequest(name=MODEL), timeout=30)
    assert meta.platform == "rnnserve_translator" and list(meta.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("translation", "BYTES", [-1])]
    config = stub.ModelConfig(v2.ModelConfigRequest(name=MODEL), timeout=30).config
    assert config.model_transaction_policy.decoupled
    params = {k: p.string_value for k, p in config.parameters.items()}
    assert params["kind"] == "translator" and (params["source_language"], params["target_language"]) == ("de", "en")
    assert "beam_size" in params["request_parameters"].split(",")


def test_infer_translates_every_text_as_the_native_api(server, stub):
    reply = stub.ModelInfer(_request(TEXTS), timeout=60)
    assert reply.id == "t1" and reply.model_version == "1"
    assert _texts(reply) == [_native(server, t) for t in TEXTS]
    beams = stub.ModelInfer(_request(TEXTS[:1], beam_size=3, length_penalty=0.0), timeout=60)
    assert _texts(beams) == [_native(server, TEXTS[0], beam_size=3, length_penalty=0.0)]
    assert beams.parameters["finish_reason"].string_param in ("stop", "length")
    assert beams.parameters["source_tokens"].int64_param > 0


def test_stream_sends_the_translation_decoupled_and_marks_the_last_response(server, stub):
    replies = list(stub.ModelStreamInfer(iter([_request(TEXTS[:1], flush_chars=1, flush_ms=1)]), timeout=60))
    assert all(not r.error_message for r in replies)
    final = [r.infer_response.parameters[FINAL].bool_param for r in replies]
    assert final[-1] and not any(final[:-1])
    assert "".join(t for r in replies for t in _texts(r.infer_response)) == _native(server, TEXTS[0])
    assert replies[-1].infer_response.parameters["generated_tokens"].int64_param > 0


def test_a_stream_request_holds_one_text(stub):
    (reply,) = list(stub.ModelStreamInfer(iter([_request(TEXTS)]), timeout=60))
    assert reply.error_message.startswith("inputs['text'].shape: ModelStreamInfer translates one text per request")
    assert reply.infer_response.id == "t1"


@pytest.mark.parametrize("params, message", [
    ({"beam_size": "3"}, "parameters.beam_size: must be an integer"),
    ({"length_penalty": "x"}, "parameters.length_penalty: must be a number"),
    ({"temperature": 1}, "parameters.temperature: unknown parameter"),
    ({"beam_size": 99}, "beam_size: must be in 1.."),
])
def test_bad_parameters_are_invalid_argument_naming_them(stub, params, message):
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(_request(TEXTS[:1], **params), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(message)


def test_an_empty_text_is_named_by_its_input_index(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(_request(["Hund", ""]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("inputs['text'][1]: must not be empty")


def test_too_many_texts_are_named_like_translate_batch(server, stub):
    n = server.server.host.settings.max_translate_texts + 1
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(_request(["Hund"] * n), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"inputs['text']: {n} texts, at most {n - 1} per request")
