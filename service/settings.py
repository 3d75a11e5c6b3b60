"""Server settings: defaults, overridden by RNNSERVE_* environment variables, overridden by flags; read once."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

from service.models.thread_policy import ThreadPolicy

ENV_PREFIX = "RNNSERVE_"
CLIENT_PREFIX = "RNNSERVE_CLIENT_"  # the client CLI's variables (its token): a shell may hold both


@dataclass(frozen=True)
class Settings:
    host: str = "[::]"  # gRPC listen address
    port: int = 50051  # gRPC port; 0 picks a free one
    health_port: int = 50052  # grpc.health.v1 alone, plain h2c, for probes; 0 picks a free one, -1 disables it
    metrics_host: str = "127.0.0.1"  # HTTP /metrics listen address (deployments set 0.0.0.0 where Prometheus scrapes)
    metrics_port: int = 9090  # HTTP /metrics; 0 picks a free one, -1 disables it
    metrics_cache_s: float = 1.0  # a scrape within this long of the last rendering gets the same text
    metrics_max_per_s: float = 10.0  # scrapes a second (all clients together); beyond this, 429
    metrics_max_clients: int = 4  # /metrics connections at once; more are closed at once
    metrics_timeout_s: float = 5.0  # a /metrics client must send its request and take the reply within this
    http_host: str = "[::]"  # HTTP listen address (REST, server-sent events, OpenAI completions, the playground)
    http_port: int = 8000  # HTTP port; 0 picks a free one, -1 turns HTTP off
    http_cors_origins: str = ""  # browser origins allowed to call the HTTP API, comma-separated ("*": any); none by default
    model_dir: str = "models"  # repository: <model_dir>/<name>/<version>/{model.onnx, tokenizer.json, meta.json}
    poll_s: float = 0.0  # reload the repository this often (seconds); 0: only at start and on Admin.ReloadModels

    # Generate: continuous batching, per model
    max_streams: int = 64  # streams decoded together (the decode batch); more wait in the queue
    max_queue: int = 64  # streams waiting for a slot; beyond this, RESOURCE_EXHAUSTED at once
    prefill_batch: int = 16  # prompts read in one call
    prefill_chunk: int = 256  # prompt characters per prefill call, so a long prompt never stalls decoding for long
    max_prompt_chars: int = 8192  # also the longest text Classify accepts
    max_tokens_limit: int = 100_000  # largest max_tokens a request may ask for
    default_max_tokens: int = 256  # when a request leaves max_tokens unset
    max_stop: int = 4  # stop sequences per request
    max_stop_chars: int = 32  # characters per stop sequence
    flush_chars: int = 64  # default: send text once this many characters are ready...
    flush_ms: int = 50  # ...or once this long has passed since the last send
    deliver_ms: float = 1.0  # while streams run, the event loop collects their text this often (first text: at once)

    # Translate: decoded with continuous batching like Generate (max_streams rows, max_queue requests waiting,
    # the flush defaults above)
    encode_batch: int = 4  # sources read in one encoder call, so that a step which reads sources stays about a step long
    max_source_bytes: int = 2048  # longest text to translate, in UTF-8 bytes...
    max_source_tokens: int = 200  # ...and in the model's source tokens
    max_beam_size: int = 8  # largest beam_size (and at most max_streams: each hypothesis holds one of those rows)
    max_translate_texts: int = 64  # texts per TranslateBatch request

    # Caption: decoded like Translate (its rows, queue, beam and flush settings); the image is untrusted bytes
    max_image_bytes: int = 4 << 20  # an image file's bytes (a request must also fit max_receive_message_bytes)
    max_image_pixels: int = 16_000_000  # width x height from its header, checked before decoding (48 MB as RGB)
    max_caption_images: int = 32  # images per CaptionBatch request (and per v2 ModelInfer)
    image_encode_batch: int = 8  # images through the image encoder in one call
    image_decode_threads: int = 2  # threads reading image files, per model version; at most this many are in memory

    # Classify: dynamic batching, per model
    classify_max_batch: int = 64  # texts per model call; 1 turns batching off
    classify_max_delay_ms: float = 2.0  # how long the first text of a batch waits for company
    classify_max_queue: int = 1024  # texts waiting; beyond this, RESOURCE_EXHAUSTED at once
    classify_max_batch_tokens: int = 16384  # texts x padded tokens per model call (its working memory, ~4.6 KB a token
                                            # on sst2-bilstm); a longer text runs alone
    max_classify_texts: int = 64  # texts per request
    max_classify_tokens: int = 65536  # tokens of all the texts of one request

    # Trace: activations of chosen units, character by character
    max_trace_chars: int = 4096  # longest text a Trace request may read
    max_trace_units: int = 1024  # (layer, unit) columns per Trace request
    max_trace_work: int = 1 << 20  # characters x columns per Trace request (its reply: ~20 bytes each)
    max_traces: int = 4  # Trace calls computing at once; beyond this, RESOURCE_EXHAUSTED at once

    # ONNX Runtime
    intra_op_threads: int = 0  # per model session; 0 takes the count measured at export (meta.json runtime)
    inter_op_threads: int = 1  # per model session (graphs here are sequential)
    decode_threads_by_batch: str = ""  # char LM decode threads by batch, e.g. "1:1,16:2"; "": meta.json's, if any

    # Security: TLS is on when a certificate is given; mutual TLS when client_ca is too; tokens when a file is
    # given (files, never values: secrets stay out of the environment, flags and `ps`)
    tls_cert_file: str = ""  # PEM server certificate (chain); needs tls_key_file
    tls_key_file: str = ""  # PEM private key of tls_cert_file
    tls_client_ca_file: str = ""  # PEM CA bundle: require client certificates signed by it (mutual TLS)
    auth_token_file: str = ""  # accepted bearer tokens, one per line (two during a rotation); all but health need one

    # Limits that protect the process
    max_receive_message_bytes: int = 4 << 20  # larger requests: RESOURCE_EXHAUSTED (gRPC), 413 (HTTP); 64 x 8192-char texts fit
    max_send_message_bytes: int = 4 << 20  # no reply comes near it (Trace messages are ~1 MiB)
    max_concurrent_rpcs: int = 1024  # RPCs in flight on the gRPC port (health has its own port); beyond it RESOURCE_EXHAUSTED
    session_max_requests: int = 4  # requests of one ModelStreamInfer session in progress; the next is read when one ends
    session_max_bytes: int = 8 << 20  # and their bytes: the next is read only while max_receive_message_bytes more fit
    session_idle_s: float = 300.0  # a ModelStreamInfer session that sends no reply this long ends (DEADLINE_EXCEEDED)
    session_max_s: float = 3600.0  # and one ends after this long in all (each of its requests has max_request_s)
    max_request_s: float = 900.0  # time budget of any call: 100,000 chars at ~250 chars/s in a full batch take 400 s
    keepalive_s: float = 20.0  # ping a client connection with calls this often; unanswered this long, it is dropped
    max_streams_per_connection: int = 128  # HTTP/2 streams one connection may hold open (nginx's default). grpc
                                           # refuses a client's calls beyond it (UNAVAILABLE), and a rapid-reset
                                           # flood's streams under it reach the Python server: 32 cuts the flood's
                                           # cost to others ~7x -> ~2.5x p99 but refuses a client's 33rd call in
                                           # flight (docs/reliability.md); compose's replicas, behind nginx, use 32
    max_connections: int = 2048  # client connections at once (nginx opens one per proxied call)
    connection_idle_s: float = 120.0  # a connection without calls for this long is closed
    connection_age_s: float = 3600.0  # a connection is asked to go away (GOAWAY) after this long; its calls may finish
    handshake_timeout_s: float = 10.0  # a new connection must complete its TLS / HTTP/2 handshake within this
    max_health_watches: int = 64  # Health/Watch streams open at once, per port; beyond this, RESOURCE_EXHAUSTED
    http2_bdp_probe: int = 0  # 1: grpc sizes each stream's receive window from the bandwidth-delay product, at least
                              # 4 MiB, buffered for a stream whose requests are not being read; 0: 64 KiB, grown for
                              # each message a handler reads (a large request costs one more round trip)

    grace_s: float = 30.0  # on SIGTERM, how long running requests may take to finish
    log_level: str = "INFO"  # DEBUG, INFO, WARNING, ERROR

    def __post_init__(self) -> None:
        if self.decode_threads_by_batch:
            ThreadPolicy.parse(self.decode_threads_by_batch)
        positive = ("max_streams", "prefill_batch", "prefill_chunk", "max_prompt_chars", "max_tokens_limit",
                    "default_max_tokens", "max_stop_chars", "flush_chars", "flush_ms", "deliver_ms", "classify_max_batch",
                    "classify_max_queue", "classify_max_batch_tokens", "max_classify_texts", "max_classify_tokens",
                    "max_trace_chars", "max_trace_units", "max_trace_work", "max_traces", "max_source_bytes",
                    "max_source_tokens", "max_beam_size", "max_translate_texts", "max_image_bytes", "max_image_pixels",
                    "max_caption_images", "image_encode_batch", "image_decode_threads", "inter_op_threads",
                    "max_receive_message_bytes", "max_send_message_bytes", "max_concurrent_rpcs", "session_max_requests",
                    "session_max_bytes", "session_idle_s", "session_max_s", "max_request_s", "keepalive_s",
                    "max_streams_per_connection", "max_connections", "connection_idle_s", "connection_age_s",
                    "handshake_timeout_s", "max_health_watches", "metrics_max_per_s", "metrics_max_clients", "metrics_timeout_s")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"setting {name} must be positive, got {getattr(self, name)}")
        for name in ("port", "max_queue", "max_stop", "intra_op_threads", "classify_max_delay_ms", "grace_s", "poll_s",
                     "metrics_cache_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"setting {name} must be >= 0, got {getattr(self, name)}")
        for name in ("metrics_port", "http_port", "health_port"):
            if getattr(self, name) < -1:
                raise ValueError(f"setting {name} must be >= -1, got {getattr(self, name)}")
        if self.http2_bdp_probe not in (0, 1):
            raise ValueError(f"setting http2_bdp_probe must be 0 or 1, got {self.http2_bdp_probe}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError("setting default_max_tokens must not exceed max_tokens_limit")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("settings tls_cert_file and tls_key_file go together: TLS needs both (or neither)")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("setting tls_client_ca_file (mutual TLS) needs TLS: set tls_cert_file and tls_key_file")

    @classmethod
    def load(cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults <- RNNSERVE_<NAME> environment variables <- --name flags. Unknown names are errors."""
        environ = os.environ if environ is None else environ
        types = {f.name: f.type for f in fields(cls)}
        values = {}
        for key, text in environ.items():
            if not key.startswith(ENV_PREFIX) or key.startswith(CLIENT_PREFIX):
                continue
            name = key[len(ENV_PREFIX):].lower()
            if name not in types:
                raise ValueError(f"unknown environment variable {key} (known: {', '.join(_env(n) for n in types)})")
            values[name] = _parse(text, types[name], key)
        parser = argparse.ArgumentParser(prog="python -m service", description="rnnserve gRPC inference server",
                                         allow_abbrev=False)
        for f in fields(cls):
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, metavar=f.type.upper(),
                                help=f"env {_env(f.name)}, default {f.default!r}")
        args = parser.parse_args(list(argv or []))
        for name, text in vars(args).items():
            if text is not None:
                values[name] = _parse(text, types[name], f"--{name.replace('_', '-')}")
        return replace(cls(), **values)


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _parse(text: str, type_name: str, where: str) -> int | float | str:
    try:
        return {"int": int, "float": float, "str": str}[type_name](text)
    except ValueError:
        raise ValueError(f"{where} expects {type_name}, got {text!r}") from None
