"""Caption and CaptionBatch through a real server: parity with an in-process ONNX Runtime loop, batching invariance,
the same tensor as training's path, streaming, beam search, and the encoder batched over joining requests."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.artifact.image import ImageSpec, image_tensor
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from tests.service.conftest import CAPTIONER
from tests.support import images
from tests.support.caption_reference import ReferenceCaptioner

IMAGES = [images.jpeg(seed) for seed in range(4)] + [images.png(7, 200, 120)]


@pytest.fixture(scope="module")
def reference(captioner_repo) -> ReferenceCaptioner:
    return ReferenceCaptioner(captioner_repo / CAPTIONER / "1")


def caption(stub, image: bytes, **fields) -> tuple[str, list[pb.CaptionResponse]]:
    replies = list(stub.Caption(pb.CaptionRequest(model=CAPTIONER, image=image, **fields), timeout=60))
    return "".join(r.text for r in replies), replies


def test_served_greedy_captions_equal_the_in_process_loop_word_for_word(caption_server, reference):
    for image in IMAGES:
        ids, attention, stopped = reference.greedy(image)
        text, replies = caption(caption_server.stub, image, return_attention=True, flush_chars=1)
        f = replies[-1].finished
        assert text == reference.text(ids) and text
        assert f.usage.generated_tokens == len(ids) + stopped and f.usage.regions == attention.shape[1]
        assert f.finish_reason == (pb.FINISH_REASON_STOP if stopped else pb.FINISH_REASON_LENGTH)
        a = f.attention
        assert (a.rows, a.cols) == (4, 6) and len(a.words) == len(ids) + stopped
        np.testing.assert_allclose(np.reshape(a.weights, (len(a.words), a.rows * a.cols)), attention, atol=1e-5)
        assert all(not r.HasField("finished") for r in replies[:-1])


def test_a_caption_is_the_same_alone_or_among_31_others(caption_server):
    pics = [images.jpeg(seed) for seed in range(32)]
    alone = [caption(caption_server.stub, p)[0] for p in pics[:4]]
    batch = caption_server.stub.CaptionBatch(pb.CaptionBatchRequest(model=CAPTIONER, images=pics), timeout=120)
    assert [c.text for c in batch.captions[:4]] == alone
    with ThreadPoolExecutor(32) as pool:  # 32 concurrent streams, decoded in one batch
        together = list(pool.map(lambda p: caption(caption_server.stub, p)[0], pics))
    assert together == [c.text for c in batch.captions]
    assert len(set(together)) > 1  # the images do get different captions


def test_beam_search_is_the_same_alone_or_batched_and_beam_one_is_greedy(caption_server):
    pics = [images.jpeg(seed) for seed in range(6)]
    greedy = [caption(caption_server.stub, p)[0] for p in pics[:2]]
    assert [caption(caption_server.stub, p, beam_size=1)[0] for p in pics[:2]] == greedy
    alone = [caption(caption_server.stub, p, beam_size=3, return_attention=True)[1][-1].finished for p in pics[:2]]
    batch = caption_server.stub.CaptionBatch(pb.CaptionBatchRequest(model=CAPTIONER, images=pics, beam_size=3,
                                                                     return_attention=True), timeout=120)
    for want, got in zip(alone, batch.captions[:2], strict=True):
        assert got.finished.usage.generated_tokens == want.usage.generated_tokens
        assert list(got.finished.attention.words) == list(want.attention.words)
        np.testing.assert_allclose(got.finished.attention.weights, want.attention.weights, atol=1e-5)


def test_the_encoder_gets_the_tensor_of_the_shared_image_path(caption_server, captioner_repo):
    """The served path hands the encoder exactly image_tensor(bytes) — the function training reads images with."""
    runner = caption_server.server.host.repo.get(CAPTIONER).runner
    seen: list[np.ndarray] = []
    encode = runner.encode

    def record(sources):
        seen.extend(sources)
        return encode(sources)

    runner.encode = record
    try:
        caption(caption_server.stub, IMAGES[4])
    finally:
        del runner.encode
    assert len(seen) == 1 and np.array_equal(seen[0], image_tensor(IMAGES[4], ImageSpec(32, 48)))


def test_images_that_arrive_together_share_one_encoder_call(caption_server):
    """While the encoder is held on the first request, 11 more arrive; released, they go through in encoder calls
    of up to image_encode_batch (8) images, not one call each."""
    runner = caption_server.server.host.repo.get(CAPTIONER).runner
    release, calls = threading.Event(), []
    encode = runner.encode

    def held(sources):
        release.wait(60)
        calls.append(len(sources))
        return encode(sources)

    runner.encode = held
    try:
        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(caption, caption_server.stub, images.jpeg(seed)) for seed in range(12)]
            assert caption_server.wait_for(lambda: _holding(caption_server) == 12, timeout=30)
            release.set()
            [f.result() for f in futures]
    finally:
        release.set()
        del runner.encode
    assert sum(calls) == 12 and max(calls) == 8


def _holding(running) -> float:
    """Caption requests in the engine: waiting for rows, or holding them (the first one inside the held encoder)."""
    return (running.metric("rnnserve_queued_requests", model=CAPTIONER, method="Caption")
            + running.metric("rnnserve_active_streams", model=CAPTIONER))
