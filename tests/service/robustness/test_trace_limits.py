"""Trace under hostile use: valid long texts never end INTERNAL, the work is budgeted, a client that leaves stops it."""

from __future__ import annotations

import logging
import threading
import tracemalloc

import grpc
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from service import kinds
from service.interpret import cells, trace
from service.kinds import char_lm
from tests.support.data import ROOT
from tests.support.harness import pb, servers

# Texts that ended INTERNAL before the self-check's tolerance scaled with the values: the LSTM cell
# state grows along a repeated character (124 after 127 "e" on python-lstm), past an absolute 1e-4.
REGRESSIONS = {
    "python-lstm": ["e" * 127],
    "shakespeare-lstm": ["e" * 110, "漢字テキスト" * 100],
}
# And a sweep across the chunk boundaries on every bundled LM (bench/hostile/trace.py goes up to 4,096).
SWEEP = {name: [text[:n] for text in ("e" * 1000, "漢字テキスト" * 200) for n in (1, 2, 127, 128, 129, 256, 257, 1000)]
         for name in ("python-lstm", "shakespeare-lstm", "shakespeare-gru")}


@pytest.fixture(scope="module")
def bundled():
    """A server over the committed models (their LSTM cell states grow the largest), numpy's BLAS in one thread as
    `python -m service` runs it (two threads make the recurrence ~10x slower on two cores)."""
    with threadpool_limits(1, user_api="blas"), servers(ROOT / "models") as start:
        yield start(max_trace_chars=4096, max_trace_work=4096)


@pytest.mark.parametrize(("name", "texts"), [*(pytest.param(n, t, id=f"regressions-{n}") for n, t in REGRESSIONS.items()),
                                             *(pytest.param(n, t, id=f"sweep-{n}") for n, t in SWEEP.items())])
@pytest.mark.slow
def test_long_and_repetitive_texts_trace_without_error(bundled, name, texts, caplog):
    for text in texts:
        with caplog.at_level(logging.ERROR, logger="rnnserve"):
            replies = list(bundled.stub.Trace(pb.TraceRequest(model=name, text=text, layers=[0], units=[0]), timeout=300))
        steps = [s for r in replies[1:] for s in r.steps]
        assert [s.position for s in steps] == list(range(len(text))), (name, len(text))
        assert not caplog.records


@pytest.fixture(scope="module")
def tracing(serve):
    return serve(max_trace_chars=300, max_trace_units=40, max_trace_work=1000, max_traces=1)


def test_a_trace_over_the_work_budget_is_refused_naming_the_field(tracing):
    with pytest.raises(grpc.RpcError) as err:
        list(tracing.stub.Trace(pb.TraceRequest(model="tiny-lstm", text="x" * 101, layers=[0], units=range(10))))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("text: 101 characters x 10 columns is 1010, the limit is 1000 (max_trace_work)")


def test_a_trace_the_tracer_cannot_follow_is_failed_precondition_not_internal(tracing, monkeypatch, caplog):
    monkeypatch.setattr(trace, "VERIFY_ATOL", -1.0)  # every state now "disagrees" with the graph
    with caplog.at_level(logging.ERROR, logger="rnnserve"), pytest.raises(grpc.RpcError) as err:
        list(tracing.stub.Trace(pb.TraceRequest(model="tiny-gru", text="abc", layers=[0], units=[0]), timeout=60))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot be traced" in err.value.details() and not caplog.records


class Gate:
    """Wraps char_lm.next_steps: counts the chunks computed and holds the second one until released."""

    def __init__(self, compute) -> None:
        self.compute, self.calls = compute, 0
        self.reached, self.release = threading.Event(), threading.Event()

    def __call__(self, run, tokens):
        self.calls += 1
        if self.calls == 2:
            self.reached.set()
            self.release.wait(60)
        return self.compute(run, tokens)


def test_a_trace_stops_computing_when_its_client_leaves_and_holds_a_slot_until_then(tracing, monkeypatch):
    monkeypatch.setattr(trace, "TRACE_CHUNK_CHARS", 10)
    monkeypatch.setattr(char_lm, "TRACE_CHUNK_CHARS", 10)
    gate = Gate(char_lm.next_steps)
    monkeypatch.setattr(char_lm, "next_steps", gate)
    call = tracing.stub.Trace(pb.TraceRequest(model="tiny-lstm", text="x" * 300, layers=[0], units=[0]), timeout=60)
    assert next(call).HasField("header") and gate.reached.wait(30)
    with pytest.raises(grpc.RpcError) as busy:  # max_traces = 1: the slot is taken
        list(tracing.stub.Trace(pb.TraceRequest(model="tiny-lstm", text="abc", layers=[0], units=[0]), timeout=30))
    assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_traces" in busy.value.details()
    call.cancel()
    assert tracing.wait_for(lambda: kinds.get("char_lm").tracers.n_open == 0, 30)
    gate.release.set()
    assert gate.calls == 2  # of 30 chunks: none computed after the client left
    replies = list(tracing.stub.Trace(pb.TraceRequest(model="tiny-lstm", text="abc", layers=[0], units=[0]), timeout=30))
    assert len(replies) == 2


LSTM = ROOT / "models" / "shakespeare-lstm" / "1"


def test_a_versions_tracer_holds_its_weights_at_the_graphs_own_size():
    """Kept for as long as the version is loaded, so a per-version cost: float32, as the graph stores them (float64
    copies held twice the graph's size)."""
    tracer = trace.Tracer.load(LSTM / "model.onnx")
    arrays = [tracer.embedding, *(w for layer in tracer.layers for w in (layer.W, layer.R, layer.Wb, layer.Rb))]
    assert {a.dtype for a in arrays} == {np.dtype(np.float32)}
    assert sum(a.nbytes for a in arrays) <= (LSTM / "model.onnx").stat().st_size


def test_a_trace_chunk_is_computed_and_sent_in_a_few_times_its_message():
    """What one Trace holds while its client reads nothing: a chunk's arrays and its message. Built as one list of
    Python floats, the message took 32 bytes a value on top of itself (9x the message in all)."""
    model = cells.Model.open(LSTM)
    units = list(range(model.meta.sizes["hidden_size"]))
    per_message = char_lm.TRACE_MESSAGE_VALUES // (len(units) * len(model.tracer.quantities))
    run = trace.TraceRun(model.tracer, model.runner, model.tokenizer, "e" * 1024, [1] * len(units), units, 5,
                         min(trace.TRACE_CHUNK_CHARS, per_message))
    char_lm.next_steps(run, model.tokenizer.tokens)  # ONNX Runtime's arena and numpy's buffers warmed up
    tracemalloc.start()
    try:
        reply = char_lm.next_steps(run, model.tokenizer.tokens)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(reply.steps) == trace.TRACE_CHUNK_CHARS and reply.ByteSize() > 900_000
    assert peak < 5 * reply.ByteSize(), f"{peak / 1e6:.1f} MB to compute and build a {reply.ByteSize() / 1e6:.1f} MB message"
