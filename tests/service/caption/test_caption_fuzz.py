"""Mutated real images against a running captioner: every answer is a caption or INVALID_ARGUMENT naming `image`,
never another code, and the server keeps serving. Header damage is always refused, and so is a truncation that
loses any of the image's pixels."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.artifact import image
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from tests.service.conftest import CAPTIONER
from tests.support import images

SEEDS = (images.jpeg(0, 120, 80), images.png(1, 90, 60), images.rotated_jpeg(images.picture(), 6), images.grey16_png())


def _same_pixels(cut: bytes, whole: bytes) -> bool:
    """Whether a truncated file still holds the whole image (only trailing chunks lost, e.g. a PNG's IEND):
    then a caption is the right answer; a truncation that loses any pixel must be refused."""
    try:
        return np.array_equal(np.asarray(image.decode(cut)), np.asarray(image.decode(whole)))
    except image.ImageError:
        return False


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(bytes, must be refused): a real image with bytes flipped, a span cut out, or cut short."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    how = draw(st.sampled_from(["flip", "cut", "truncate", "header"]))
    if how == "truncate":
        cut = bytes(data[: draw(st.integers(0, len(data) - 16))])
        return cut, not _same_pixels(cut, bytes(data))
    if how == "header":  # inside the signature: no longer a JPEG or PNG
        data[draw(st.integers(0, 2))] ^= draw(st.integers(1, 255))
        return bytes(data), True
    if how == "cut":
        start = draw(st.integers(0, len(data) - 1))
        del data[start : start + draw(st.integers(1, 64))]
        return bytes(data), False
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data), False


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated())
def test_a_mutated_image_gets_a_caption_or_invalid_argument_and_the_server_stays_up(caption_server, case):
    data, refused = case
    try:
        replies = list(caption_server.stub.Caption(pb.CaptionRequest(model=CAPTIONER, image=data), timeout=60))
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("image: "), err.details()
    else:
        assert not refused, "a truncated (pixels lost) or re-signed image was captioned"
        assert replies[-1].HasField("finished")
    assert list(caption_server.stub.Caption(pb.CaptionRequest(model=CAPTIONER, image=SEEDS[0]), timeout=60))
