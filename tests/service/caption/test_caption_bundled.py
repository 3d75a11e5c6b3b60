"""The bundled captioner served by a real server: on test-split photos, greedy and beam-3 captions, concurrent,
are the ones training's torch-free reference finds with the same graphs, and CaptionBatch agrees."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from tests.support.data import FLICKR8K, ROOT, need
from tests.support.harness import servers

MODEL = "flickr8k-captioner"
ARTIFACT = ROOT / "models" / MODEL / "1"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not ARTIFACT.exists(), reason=f"{ARTIFACT} is not bundled")]


@pytest.fixture(scope="module")
def bundled():
    need(FLICKR8K / "split_test.txt")
    with servers(ROOT / "models") as start:
        yield start(max_streams=64)


def test_served_captions_equal_the_reference_concurrent_or_batched(bundled):
    from training.ort_captioner import OrtCaptioner

    reference = OrtCaptioner(ARTIFACT)
    alpha = reference.meta.captioner["beam"]["length_penalty"]
    names = (FLICKR8K / "split_test.txt").read_text().split()[:12]
    images = [(FLICKR8K / "images" / name).read_bytes() for name in names]

    def caption(image: bytes, beam: int) -> str:
        request = pb.CaptionRequest(model=MODEL, image=image, beam_size=beam)
        replies = list(bundled.stub.Caption(request, timeout=120))
        assert replies[-1].HasField("finished")
        return "".join(r.text for r in replies)

    with ThreadPoolExecutor(len(images)) as pool:
        greedy = list(pool.map(lambda b: caption(b, 1), images))
        beam = list(pool.map(lambda b: caption(b, 3), images))
    assert greedy == reference.caption(images)
    assert beam == reference.caption(images, 3, alpha)
    batch = bundled.stub.CaptionBatch(pb.CaptionBatchRequest(model=MODEL, images=images), timeout=120)
    assert [c.text for c in batch.captions] == greedy
