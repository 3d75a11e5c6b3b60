"""Bad images, limits, metrics and the Open Inference Protocol of a captioner, through a real server."""

from __future__ import annotations

import grpc
import pytest

from service.api.v2_params import pack_bytes, unpack_bytes
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from tests.service.conftest import CAPTIONER
from tests.support import images
from tests.support.harness import servers


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def _stream(stub, image: bytes) -> str:
    return "".join(r.text for r in stub.Caption(pb.CaptionRequest(model=CAPTIONER, image=image), timeout=60))


@pytest.mark.parametrize("name", sorted(images.malformed()))
def test_a_malformed_image_is_invalid_argument_naming_the_field(caption_server, name):
    data, reason = images.malformed()[name]
    code, details = _code(lambda: _stream(caption_server.stub, data))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("image: ") and reason in details


def test_a_bad_image_in_a_batch_is_named_by_its_index_and_nothing_is_captioned(caption_server):
    batch = [images.jpeg(i) for i in range(5)]
    batch[3] = images.apng()
    code, details = _code(lambda: caption_server.stub.CaptionBatch(
        pb.CaptionBatchRequest(model=CAPTIONER, images=batch), timeout=60))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("images[3]: an animated")
    assert _stream(caption_server.stub, images.jpeg())  # the server goes on


def test_request_fields_are_checked(caption_server):
    stub, image = caption_server.stub, images.jpeg()
    for fields, field in (({"beam_size": 10_000}, "beam_size"), ({"max_tokens": 0}, "max_tokens"),
                          ({"length_penalty": float("nan")}, "length_penalty"), ({"flush_ms": 99_999}, "flush_ms")):
        code, details = _code(lambda f=fields: list(stub.Caption(pb.CaptionRequest(model=CAPTIONER, image=image, **f))))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"{field}: "), details
    code, details = _code(lambda: stub.CaptionBatch(pb.CaptionBatchRequest(model=CAPTIONER, images=[image] * 33)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == "images: 33 images, at most 32 per request"
    code, details = _code(lambda: stub.CaptionBatch(pb.CaptionBatchRequest(model=CAPTIONER)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("images: must hold at least one")


def test_the_image_limits_come_from_the_settings(captioner_repo):
    with servers(captioner_repo) as start:
        running = start(max_image_bytes=20_000, max_image_pixels=5000, http_port=-1)
        code, details = _code(lambda: _stream(running.stub, images.jpeg(0, 600, 400)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "over the limit of 20,000" in details
        code, details = _code(lambda: _stream(running.stub, images.png(0, 100, 60)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "6,000 pixels, over the limit of 5,000" in details
        assert _stream(running.stub, images.png(0, 40, 30))


def test_metrics_count_images_requests_encoder_batches_and_first_words(caption_server):
    r = caption_server
    series = [("rnnserve_images_total", {"model": CAPTIONER, "result": "accepted"}),
              ("rnnserve_images_total", {"model": CAPTIONER, "result": "refused"}),
              ("rnnserve_requests_total", {"method": "Caption", "code": "OK"}),
              ("rnnserve_requests_total", {"method": "Caption", "code": "INVALID_ARGUMENT"}),
              ("rnnserve_encode_batch_size_sum", {"model": CAPTIONER, "kind": "captioner"}),
              ("rnnserve_time_to_first_token_seconds_count", {"model": CAPTIONER, "kind": "captioner"}),
              ("rnnserve_image_decode_seconds_count", {"model": CAPTIONER})]
    before = [r.metric(name, **labels) for name, labels in series]
    _stream(r.stub, images.jpeg())
    _stream(r.stub, images.png())
    _code(lambda: _stream(r.stub, b"not an image"))
    after = [r.metric(name, **labels) for name, labels in series]
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 2, 1, 2, 2, 2]


def _infer(stub, images_: list[bytes], **params) -> v2.ModelInferResponse:
    req = v2.ModelInferRequest(model_name=CAPTIONER, id="req-1")
    req.inputs.add(name="image", datatype="BYTES", shape=[len(images_)])
    req.raw_input_contents.append(pack_bytes(images_))
    for k, v in params.items():
        req.parameters[k].int64_param = v
    return req


def test_v2_model_infer_captions_every_image_as_the_native_api_does(caption_server):
    stub = v2_grpc.GRPCInferenceServiceStub(caption_server.channel)
    pics = [images.jpeg(i) for i in range(3)]
    reply = stub.ModelInfer(_infer(stub, pics), timeout=60)
    assert reply.id == "req-1" and reply.outputs[0].name == "caption" and list(reply.outputs[0].shape) == [3]
    got = [b.decode() for b in unpack_bytes(reply.raw_output_contents[0], "caption")]
    assert got == [_stream(caption_server.stub, p) for p in pics]
    meta = stub.ModelMetadata(v2.ModelMetadataRequest(name=CAPTIONER), timeout=10)
    assert [(t.name, t.datatype) for t in meta.inputs] == [("image", "BYTES")]
    code, details = _code(lambda: stub.ModelInfer(_infer(stub, [pics[0], b"GIF89a..."]), timeout=60))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("inputs['image'][1]: not a JPEG or PNG")


def test_v2_stream_infer_streams_one_caption_and_reports_a_bad_image_in_the_stream(caption_server):
    stub = v2_grpc.GRPCInferenceServiceStub(caption_server.channel)
    image = images.jpeg(2)
    replies = list(stub.ModelStreamInfer(iter([_infer(stub, [image], beam_size=1, flush_chars=1),
                                               _infer(stub, [b"\x89PNG\r\n\x1a\n broken"])]), timeout=60))
    ok = [r.infer_response for r in replies if not r.error_message]
    text = "".join(b.decode() for r in ok for b in unpack_bytes(r.raw_output_contents[0], "caption"))
    assert text == _stream(caption_server.stub, image)
    assert ok[-1].parameters["triton_final_response"].bool_param
    (bad,) = [r for r in replies if r.error_message]
    assert bad.error_message.startswith("inputs['image'][0]: a PNG signature but a corrupt header")
