"""Capacity and failure: cancellation and deadlines free the slot, limits answer RESOURCE_EXHAUSTED at once."""

from __future__ import annotations

import threading

import grpc
import pytest

from tests.support.harness import generate, held, patched_run, pb, slowed

LONG = {"model": "tiny-lstm", "prompt": "ROMEO:", "max_tokens": 5000, "flush_chars": 1}


def _active(server) -> float:
    return server.metric("rnnserve_active_streams", model="tiny-lstm", version="1")


def _queued(server) -> float:
    return server.metric("rnnserve_queued_requests", model="tiny-lstm", version="1", method="Generate")


def test_cancelling_a_stream_frees_its_slot(server):
    with patched_run(server, "tiny-lstm", slowed()):
        cancelled = server.metric("rnnserve_requests_total", method="Generate", code="CANCELLED")
        call = server.stub.Generate(pb.GenerateRequest(**LONG), timeout=60)
        next(call)
        assert _active(server) == 1
        call.cancel()
        assert server.wait_for(lambda: _active(server) == 0)
        assert server.wait_for(lambda: server.metric("rnnserve_requests_total", method="Generate",
                                                     code="CANCELLED") == cancelled + 1)


def test_a_deadline_ends_the_stream_and_frees_its_slot(server):
    with patched_run(server, "tiny-lstm", slowed()):
        with pytest.raises(grpc.RpcError) as err:
            list(server.stub.Generate(pb.GenerateRequest(**LONG), timeout=0.3))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert server.wait_for(lambda: _active(server) == 0)
        assert server.wait_for(lambda: server.metric("rnnserve_requests_total", method="Generate",
                                                     code="DEADLINE_EXCEEDED") >= 1)


def test_over_capacity_is_refused_immediately_and_capacity_returns(serve):
    small = serve(max_streams=2, max_queue=1, classify_max_queue=2)
    with patched_run(small, "tiny-lstm", slowed()):
        running = [small.stub.Generate(pb.GenerateRequest(**LONG), timeout=60) for _ in range(2)]
        for call in running:
            next(call)
        waiting = small.stub.Generate(pb.GenerateRequest(**LONG), timeout=60)
        assert small.wait_for(lambda: _queued(small) == 1)
        with pytest.raises(grpc.RpcError) as err:
            generate(small.stub, **LONG)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in err.value.details()

        running[0].cancel()
        next(waiting)  # the waiting stream takes the freed slot
        assert small.wait_for(lambda: _queued(small) == 0 and _active(small) == 2)
        for call in (running[1], waiting):
            call.cancel()
        assert small.wait_for(lambda: _active(small) == 0)
    assert len(generate(small.stub, **{**LONG, "max_tokens": 10})[0]) == 10


def test_classify_over_capacity_is_refused_immediately(serve):
    small = serve(classify_max_queue=2, classify_max_delay_ms=0.0)
    texts = {"model": "tiny-sentiment"}
    batches = small.metric("rnnserve_classify_batch_size_count", model="tiny-sentiment")
    release = threading.Event()
    with patched_run(small, "tiny-sentiment", held(release)):
        running = small.stub.Classify.future(pb.ClassifyRequest(**texts, texts=["one"]), timeout=30)
        assert small.wait_for(lambda: small.metric("rnnserve_classify_batch_size_count", model="tiny-sentiment") == batches + 1)
        waiting = small.stub.Classify.future(pb.ClassifyRequest(**texts, texts=["two", "three"]), timeout=30)
        assert small.wait_for(lambda: small.metric("rnnserve_queued_requests", model="tiny-sentiment",
                                                   method="Classify") == 2)
        with pytest.raises(grpc.RpcError) as err:
            small.stub.Classify(pb.ClassifyRequest(**texts, texts=["four"]), timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        assert len(running.result().results) == 1 and len(waiting.result().results) == 2
