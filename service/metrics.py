"""Every Prometheus object of the service (service/metrics_http.py serves them over HTTP)."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

# A character-level RNN step takes ~0.1 ms: LLM-style buckets starting at 10 ms would put every
# observation in the first bucket. These start at 10 us and reach 2 minutes.
SECONDS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
           1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)
# Inter-character latency gets ten buckets per decade (the R10 series), 10 us to 10 s: its
# quantiles are compared with step times of a fraction of a millisecond.
FINE = (*(round(m * 10.0**e, 10) for e in range(-5, 1) for m in (1, 1.25, 1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8)), 10.0)


class WeightedHistogram(Collector):
    """A histogram whose observe(value, count) records one value `count` times in O(1).

    One decode step is one inter-character interval for each of its B streams; observing it B
    times through prometheus_client would cost more than the step itself. Also used for the
    other once-per-step histograms: an observation costs a bisect and two additions.
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self.bounds = list(buckets)
        self._children: dict[tuple[str, ...], WeightedHistogram.Child] = {}
        self._lock = threading.Lock()
        REGISTRY.register(self)

    class Child:
        def __init__(self, bounds: list[float]) -> None:
            self.bounds = bounds
            self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
            self.sum = 0.0
            self.lock = threading.Lock()

        def observe(self, value: float, count: int = 1) -> None:
            i = bisect_left(self.bounds, value)  # first bucket with value <= le
            with self.lock:
                self.counts[i] += count
                self.sum += value * count

    def labels(self, *values: str) -> WeightedHistogram.Child:
        with self._lock:
            return self._children.setdefault(tuple(values), WeightedHistogram.Child(self.bounds))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            children = list(self._children.items())
        for values, child in children:
            with child.lock:
                counts, total = list(child.counts), child.sum
            cumulative, buckets = 0, []
            for le, n in zip([*(repr(float(b)) for b in self.bounds), "+Inf"], counts, strict=True):
                cumulative += n
                buckets.append((le, cumulative))
            family.add_metric(list(values), buckets, total)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


REQUESTS = Counter("rnnserve_requests_total", "Requests by method, final status code and protocol (grpc, http).",
                   ["method", "code", "protocol"])
REQUEST_SECONDS = Histogram("rnnserve_request_duration_seconds", "End-to-end RPC latency, by method.", ["method"],
                            buckets=SECONDS)
TIME_TO_FIRST_CHAR = Histogram("rnnserve_time_to_first_char_seconds",
                               "Generate: from the request's arrival (its handler starting) to its first character.",
                               ["model", "version"], buckets=SECONDS)
INTER_CHAR = WeightedHistogram("rnnserve_inter_char_seconds",
                               "Generate: time between consecutive characters of a stream (one per character).",
                               ["model", "version"], FINE)
QUEUE_WAIT = Histogram("rnnserve_queue_wait_seconds",
                       "Time a request waited before its model call: for a stream slot (Generate) or a batch (Classify).",
                       ["model", "version", "method"], buckets=SECONDS)
MODEL_CALL_SECONDS = WeightedHistogram("rnnserve_model_call_seconds",
                                       "ONNX Runtime call time, by phase (prefill: one reading of prompts, one call "
                                       "or one per character; decode, classify).",
                                       ["model", "version", "phase"], SECONDS)
DECODE_BATCH = WeightedHistogram("rnnserve_decode_batch_size",
                                 "Rows advanced by one decode step: a Generate stream or a greedy translation is one row, "
                                 "a beam search beam_size rows.", ["model", "version", "kind"], BATCH)
PREFILL_BATCH = Histogram("rnnserve_prefill_batch_size", "Prompts read together by one prefill.", ["model", "version"],
                          buckets=BATCH)
CLASSIFY_BATCH = Histogram("rnnserve_classify_batch_size", "Texts per dynamic batch (run in groups of similar length).",
                           ["model", "version"], buckets=BATCH)
ACTIVE_STREAMS = Gauge("rnnserve_active_streams", "Generate streams holding a slot (being read or decoded).",
                       ["model", "version"])
QUEUED = Gauge("rnnserve_queued_requests", "Requests waiting: streams for a slot, texts for a batch.",
               ["model", "version", "method"])
GENERATED_CHARS = Counter("rnnserve_generated_chars_total", "Characters generated.", ["model", "version"])
# Encoder-decoder kinds (translator; the captioner shares these families): their unit is a target token.
TIME_TO_FIRST_TOKEN = Histogram("rnnserve_time_to_first_token_seconds",
                                "Encoder-decoder requests: from arrival to their first decoded token.",
                                ["model", "version", "kind"], buckets=SECONDS)
INTER_TOKEN = WeightedHistogram("rnnserve_inter_token_seconds",
                                "Encoder-decoder requests: time between consecutive decoding steps of a request "
                                "(one per output position).", ["model", "version", "kind"], FINE)
GENERATED_TOKENS = Counter("rnnserve_generated_tokens_total",
                           "Encoder-decoder requests: output positions decoded (a beam search counts one per step).",
                           ["model", "version", "kind"])
ENCODE_BATCH = WeightedHistogram("rnnserve_encode_batch_size",
                                 "Encoder-decoder requests: sources (texts, images) read by one encoder call.",
                                 ["model", "version", "kind"], BATCH)
IMAGES = Counter("rnnserve_images_total", "Captioner: request images by result: accepted (read, handed to the "
                 "engine) or refused (INVALID_ARGUMENT: not a JPEG/PNG, corrupt, over a limit).",
                 ["model", "version", "result"])
IMAGE_DECODE_SECONDS = Histogram("rnnserve_image_decode_seconds",
                                 "Captioner: time to read one image file (decode, orient, resize), off the event loop.",
                                 ["model", "version"], buckets=SECONDS)
MODEL_INFO = Gauge("rnnserve_model_info", "Loaded model versions (value 1).", ["model", "version", "kind", "cell"])
RELOADS = Counter("rnnserve_model_reloads_total",
                  "Model versions loaded, unloaded or refused by repository reloads (not the start-up load).",
                  ["result"])


HEALTH_WATCHES = Gauge("rnnserve_health_watches", "Health/Watch streams open (their own limit: max_health_watches).")
SCRAPES = Counter("rnnserve_metrics_scrapes_total",
                  "Requests to the /metrics endpoint, by result: ok, limited (429), dropped (too many connections), "
                  "failed (timed out or cut), not_found.", ["result"])


def set_models(models: Iterable[tuple[str, int, str, str]]) -> None:
    """rnnserve_model_info: exactly the (name, version, kind, cell) versions being served."""
    MODEL_INFO.clear()
    for name, version, kind, cell in models:
        MODEL_INFO.labels(name, str(version), kind, cell).set(1)


def observe_request(method: str, code: str, seconds: float, protocol: str = "grpc") -> None:
    """One finished request; the latency histogram is shared by the protocols (the same work behind them)."""
    REQUESTS.labels(method, code, protocol).inc()
    REQUEST_SECONDS.labels(method).observe(seconds)


def count_scrape(result: str) -> None:
    SCRAPES.labels(result).inc()


def count_refused(method: str, code: str, protocol: str = "grpc") -> None:
    """A call refused before its handler ran (e.g. UNAUTHENTICATED): counted, but kept out of the latency histogram."""
    REQUESTS.labels(method, code, protocol).inc()


@dataclass(frozen=True)
class GenerateMetrics:
    """The children one scheduler touches, bound once (a labels() lookup per step would cost microseconds)."""

    ttfc: Histogram
    inter_char: WeightedHistogram.Child
    queue_wait: Histogram
    prefill_call: WeightedHistogram.Child
    decode_call: WeightedHistogram.Child
    decode_batch: WeightedHistogram.Child
    prefill_batch: Histogram
    active: Gauge
    queued: Gauge
    chars: Counter

    @classmethod
    def bind(cls, model: str, version: int) -> GenerateMetrics:
        v = str(version)
        return cls(TIME_TO_FIRST_CHAR.labels(model, v), INTER_CHAR.labels(model, v),
                   QUEUE_WAIT.labels(model, v, "Generate"), MODEL_CALL_SECONDS.labels(model, v, "prefill"),
                   MODEL_CALL_SECONDS.labels(model, v, "decode"), DECODE_BATCH.labels(model, v, "char_lm"),
                   PREFILL_BATCH.labels(model, v), ACTIVE_STREAMS.labels(model, v), QUEUED.labels(model, v, "Generate"),
                   GENERATED_CHARS.labels(model, v))


@dataclass(frozen=True)
class Seq2SeqMetrics:
    """The children one encoder-decoder engine touches, bound once."""

    ttft: Histogram
    inter_token: WeightedHistogram.Child
    queue_wait: Histogram
    encode_call: WeightedHistogram.Child
    encode_batch: WeightedHistogram.Child
    decode_call: WeightedHistogram.Child
    decode_batch: WeightedHistogram.Child
    active: Gauge
    queued: Gauge
    tokens: Counter

    @classmethod
    def bind(cls, model: str, version: int, kind: str, method: str) -> Seq2SeqMetrics:
        """`method`: the RPC its requests come from, the method label of the queue metrics (e.g. Translate)."""
        v = str(version)
        return cls(TIME_TO_FIRST_TOKEN.labels(model, v, kind), INTER_TOKEN.labels(model, v, kind),
                   QUEUE_WAIT.labels(model, v, method), MODEL_CALL_SECONDS.labels(model, v, "encode"),
                   ENCODE_BATCH.labels(model, v, kind), MODEL_CALL_SECONDS.labels(model, v, "decode"),
                   DECODE_BATCH.labels(model, v, kind), ACTIVE_STREAMS.labels(model, v), QUEUED.labels(model, v, method),
                   GENERATED_TOKENS.labels(model, v, kind))


@dataclass(frozen=True)
class ImageMetrics:
    """A captioner version's image counters, bound once."""

    accepted: Counter
    refused: Counter
    decode_seconds: Histogram

    @classmethod
    def bind(cls, model: str, version: int) -> ImageMetrics:
        v = str(version)
        return cls(IMAGES.labels(model, v, "accepted"), IMAGES.labels(model, v, "refused"),
                   IMAGE_DECODE_SECONDS.labels(model, v))


@dataclass(frozen=True)
class ClassifyMetrics:
    queue_wait: Histogram
    call: WeightedHistogram.Child
    batch: Histogram
    queued: Gauge

    @classmethod
    def bind(cls, model: str, version: int) -> ClassifyMetrics:
        v = str(version)
        return cls(QUEUE_WAIT.labels(model, v, "Classify"), MODEL_CALL_SECONDS.labels(model, v, "classify"),
                   CLASSIFY_BATCH.labels(model, v), QUEUED.labels(model, v, "Classify"))
