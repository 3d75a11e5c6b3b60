"""/metrics over HTTP: names, sub-millisecond buckets, and histograms that move with traffic."""

from __future__ import annotations

from tests.support.harness import generate, pb

LM = {"model": "tiny-lstm", "version": "1"}
CLF = {"model": "tiny-sentiment", "version": "1"}
WATCHED = {
    "ttfc": ("rnnserve_time_to_first_char_seconds_count", LM),
    "inter_char": ("rnnserve_inter_char_seconds_count", LM),
    "chars": ("rnnserve_generated_chars_total", LM),
    "steps": ("rnnserve_decode_batch_size_count", LM),
    "prefills": ("rnnserve_model_call_seconds_count", {**LM, "phase": "prefill"}),
    "lm_wait": ("rnnserve_queue_wait_seconds_count", {**LM, "method": "Generate"}),
    "ok": ("rnnserve_requests_total", {"method": "Generate", "code": "OK"}),
    "latency": ("rnnserve_request_duration_seconds_count", {"method": "Generate"}),
    "clf_batches": ("rnnserve_classify_batch_size_count", CLF),
    "clf_texts": ("rnnserve_classify_batch_size_sum", CLF),
    "clf_wait": ("rnnserve_queue_wait_seconds_count", {**CLF, "method": "Classify"}),
}


def _read(server) -> dict[str, float]:
    return {key: server.metric(name, **labels) for key, (name, labels) in WATCHED.items()}


def test_metrics_move_with_traffic(server):
    before = _read(server)
    generate(server.stub, model="tiny-lstm", prompt="HAMLET:", max_tokens=30, seed=5)
    server.stub.Classify(pb.ClassifyRequest(model="tiny-sentiment", texts=["fine", "awful"]), timeout=30)
    d = {k: v - before[k] for k, v in _read(server).items()}
    assert (d["ttfc"], d["inter_char"], d["chars"], d["steps"]) == (1, 29, 30, 30)  # the first char is not an interval
    assert (d["prefills"], d["lm_wait"], d["ok"], d["latency"]) == (1, 1, 1, 1)
    assert d["clf_texts"] == 2 and d["clf_wait"] == 2 and 1 <= d["clf_batches"] <= 2


def test_names_buckets_and_model_info(serve):
    # rnnserve_model_info is one gauge per process, set by the server that last published its models:
    # a server started here publishes this repository's, whichever servers the session ran before.
    server = serve(max_streams=8)
    generate(server.stub, model="tiny-lstm", prompt="A", max_tokens=3)
    text = server.metrics_text()
    assert 'rnnserve_inter_char_seconds_bucket{le="0.0001",model="tiny-lstm",version="1"}' in text
    assert 'rnnserve_time_to_first_char_seconds_bucket{le="2.5e-05",model="tiny-lstm",version="1"}' in text
    assert server.metric("rnnserve_model_info", model="tiny-sentiment", version="1", kind="classifier", cell="lstm") == 1
    assert server.metric("rnnserve_model_info", model="tiny-gru", version="1", kind="char_lm", cell="gru") == 1
    for name in ("rnnserve_active_streams", "rnnserve_queued_requests", "rnnserve_model_call_seconds_bucket"):
        assert name in text
