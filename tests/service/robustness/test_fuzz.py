"""Property-based fuzzing of every request field of every RPC, native and v2, against a real server process.

Each call must end within its deadline with a status from ALLOWED (never INTERNAL or UNKNOWN), a non-OK one
naming the field; the process must stay up (a normal Generate succeeds after every property), and its memory
must return to its warmed-up baseline. Reproducible: hypothesis is derandomized and keeps no database.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc
from tests.support import fuzz_strategies as fs
from tests.support.harness import pb, pb_grpc
from tests.support.process import Process

pytestmark = [pytest.mark.slow, pytest.mark.process]  # runs the server (or its client) as a process of its own

# Small limits so that fuzzed values land on both sides of them and valid generations stay short.
FLAGS = ("--max-tokens-limit", "64", "--default-max-tokens", "16", "--max-prompt-chars", "4096",
         "--max-trace-chars", "256", "--max-trace-units", "64", "--grace-s", "1")
DEADLINE_S = 60  # per call: generous for a loaded machine; running past it is a hang
# The allocators keep some of what MB-sized requests used: +17 MiB on a quiet run, +34 MiB on a loaded CI run
# (most of it during ModelInfer's large raw contents), level on repeated passes. The leak fixed here was ~400 MiB.
RSS_MARGIN_KB = 64 * 1024
MAX_RECEIVE_BYTES = 4 * 1024 * 1024  # gRPC's default max_receive_message_length, which the server keeps
Code = grpc.StatusCode
ALLOWED = {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.FAILED_PRECONDITION, Code.RESOURCE_EXHAUSTED,
           Code.OUT_OF_RANGE, Code.UNIMPLEMENTED}
CASES: Counter[str] = Counter()  # calls made by the fuzz, per method
WARM_UP: Counter[str] = Counter()  # calls made by the warm-up before it
RSS_KB: dict[str, int] = {}  # server VmRSS after each property


def fuzz_settings(examples: int) -> hsettings:
    return hsettings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])


def rss_kb(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1))


class Fuzz:
    """The server process, stubs over one channel, and the checks every call's outcome must pass."""

    def __init__(self, model_repo: Path) -> None:
        self.p = Process(model_repo, *FLAGS)
        self.stub, self.v2 = self.p.stub, v2_grpc.GRPCInferenceServiceStub(self.p.channel)

    def call(self, rpc: Callable, request: object, fields: Iterable[str], streaming: bool = False) -> tuple[Code, list]:
        """One call to its end: its code and replies, checked against ALLOWED, the deadline and the field naming.

        A list request is sent as a request stream. RESOURCE_EXHAUSTED is allowed only for a message over the
        server's receive limit (the calls here are one at a time, never over capacity).
        """
        CASES[rpc._method.decode() if hasattr(rpc, "_method") else str(rpc)] += 1
        messages = request if isinstance(request, list) else [request]
        oversized = any((len(m) if isinstance(m, bytes) else m.ByteSize()) > MAX_RECEIVE_BYTES for m in messages)
        try:
            arg = iter(request) if isinstance(request, list) else request
            replies = list(rpc(arg, timeout=DEADLINE_S)) if streaming else [rpc(arg, timeout=DEADLINE_S)]
            code, details = Code.OK, ""
        except grpc.RpcError as err:
            replies, code, details = [], err.code(), err.details() or ""
        assert self.p.proc.poll() is None, "the server process died"
        assert code in ALLOWED, f"{code.name}: {details[:300]}"
        assert code != Code.RESOURCE_EXHAUSTED or oversized, f"{code.name} for a small request: {details[:300]}"
        if code != Code.OK:
            check_details(code, details, fields)
        return code, replies

    def assert_alive(self) -> None:
        replies = list(self.stub.Generate(pb.GenerateRequest(model="tiny-lstm", prompt="ROMEO:", max_tokens=8, seed=1),
                                          timeout=DEADLINE_S))
        assert sum(len(r.text) for r in replies) == 8 and replies[-1].HasField("finished")


def check_details(code: Code, details: str, fields: Iterable[str]) -> None:
    """A clear message: no traceback; a bad field named first; a missing or wrong-kind model named."""
    assert details and "Traceback" not in details, details[:300]
    if code == Code.INVALID_ARGUMENT:
        assert names_field(details, fields), f"no request field named first: {details[:300]}"
    elif code in (Code.NOT_FOUND, Code.FAILED_PRECONDITION):
        assert "model" in details, details[:300]


def names_field(details: str, fields: Iterable[str]) -> bool:
    """The message starts with a field path (`prompt:`, `stop[1]:`, `inputs['text'].shape:`) rooted in `fields`."""
    root = re.match(r"([A-Za-z_]\w*)[\[.:]", details)
    return bool(root) and root.group(1) in fields


def names(message_class: type) -> set[str]:
    return {f.name for f in message_class.DESCRIPTOR.fields}


GENERATE_FIELDS = names(pb.GenerateRequest)
CLASSIFY_FIELDS = names(pb.ClassifyRequest)
# v2 requests are validated as native ones after conversion: a native field (prompt, stop[0], ...) may be named.
TRANSLATE_FIELDS = names(pb.TranslateRequest) | names(pb.TranslateBatchRequest)
V2_FIELDS = names(v2.ModelInferRequest) | GENERATE_FIELDS | CLASSIFY_FIELDS | TRANSLATE_FIELDS


@pytest.fixture(scope="module")
def fuzz(model_repo):
    f = Fuzz(model_repo)
    f.assert_alive()
    yield f
    f.p.close()


# Each property: a function of the server and its number of examples, run by its test and, shorter, by the warm-up.
def generate(f: Fuzz, examples: int) -> None:
    @fuzz_settings(examples)
    @given(fs.generate_requests())
    def prop(req: pb.GenerateRequest) -> None:
        code, replies = f.call(f.stub.Generate, req, GENERATE_FIELDS, streaming=True)
        if code == Code.OK:
            assert replies[-1].HasField("finished") and not any(r.HasField("finished") for r in replies[:-1])
            assert sum(len(r.text) for r in replies) <= (req.max_tokens if req.HasField("max_tokens") else 16)
    prop()


def classify(f: Fuzz, examples: int) -> None:
    @fuzz_settings(examples)
    @given(fs.classify_requests)
    def prop(req: pb.ClassifyRequest) -> None:
        code, replies = f.call(f.stub.Classify, req, CLASSIFY_FIELDS)
        if code == Code.OK:
            assert len(replies[0].results) == len(req.texts)
    prop()


def get_model(f: Fuzz, examples: int) -> None:
    @fuzz_settings(examples)
    @given(fs.get_model_requests)
    def prop(req: pb.GetModelRequest) -> None:
        code, replies = f.call(f.stub.GetModel, req, names(pb.GetModelRequest))
        if code == Code.OK:
            assert replies[0].name == req.name
    prop()
    code, replies = f.call(f.stub.ListModels, pb.ListModelsRequest(), ())  # no fields: one case
    assert code == Code.OK and {m.name for m in replies[0].models} == set(fs.MODELS)
    code, replies = f.call(pb_grpc.AdminStub(f.p.channel).ReloadModels, pb.ReloadModelsRequest(), ())  # nor here
    assert code == Code.OK and {m.name for m in replies[0].serving} == set(fs.MODELS) and not replies[0].failed


def trace(f: Fuzz, examples: int) -> None:
    @fuzz_settings(examples)
    @given(fs.trace_requests)
    def prop(req: pb.TraceRequest) -> None:
        code, replies = f.call(f.stub.Trace, req, names(pb.TraceRequest), streaming=True)
        if code == Code.OK:
            assert replies[0].header.n_chars == len(req.text) == sum(len(r.steps) for r in replies)
    prop()


def translate(f: Fuzz, examples: int) -> None:
    @fuzz_settings(examples)
    @given(fs.translate_requests())
    def prop(req: pb.TranslateRequest) -> None:
        code, replies = f.call(f.stub.Translate, req, TRANSLATE_FIELDS, streaming=True)
        if code == Code.OK:
            assert replies[-1].HasField("finished") and not any(r.HasField("finished") for r in replies[:-1])
            if req.HasField("max_tokens"):
                assert replies[-1].finished.usage.generated_tokens <= req.max_tokens
    prop()


def translate_batch(f: Fuzz, examples: int) -> None:
    @fuzz_settings(examples)
    @given(fs.translate_batch_requests())
    def prop(req: pb.TranslateBatchRequest) -> None:
        code, replies = f.call(f.stub.TranslateBatch, req, TRANSLATE_FIELDS)
        if code == Code.OK:
            assert len(replies[0].translations) == len(req.texts)
    prop()


def model_infer(f: Fuzz, examples: int) -> None:
    @fuzz_settings(examples)
    @given(fs.infer_requests | fs.wellformed_infer_requests())
    def prop(req: v2.ModelInferRequest) -> None:
        code, replies = f.call(f.v2.ModelInfer, req, V2_FIELDS)
        if code == Code.OK:
            assert replies[0].model_name == req.model_name and replies[0].id == req.id
    prop()


def model_stream_infer(f: Fuzz, examples: int) -> None:
    """A failed request is an error_message naming the field, the stream goes on and ends OK."""
    @fuzz_settings(examples)
    @given(st.lists(fs.infer_requests | fs.wellformed_infer_requests(), min_size=1, max_size=4))
    def prop(reqs: list[v2.ModelInferRequest]) -> None:
        code, replies = f.call(f.v2.ModelStreamInfer, reqs, V2_FIELDS, streaming=True)
        CASES["ModelStreamInfer requests"] += len(reqs)
        errors = [r.error_message for r in replies if r.error_message]
        for message in errors:  # the stream's error_message carries no code: a field or a model, never a bug
            assert not message.startswith("internal error"), message
            assert names_field(message, V2_FIELDS) or "model" in message, message[:300]
        finals = [r for r in replies if r.infer_response.parameters["triton_final_response"].bool_param]
        assert code != Code.OK or len(errors) + len(finals) == len(reqs)
    prop()


def metadata_config_ready(f: Fuzz, examples: int) -> None:
    @fuzz_settings(examples)
    @given(st.sampled_from(["ModelMetadata", "ModelConfig", "ModelReady"]), fs.model_names, fs.versions)
    def prop(method: str, name: str, version: str) -> None:
        request = getattr(v2, f"{method}Request")(name=name, version=version)
        code, _ = f.call(getattr(f.v2, method), request, names(type(request)))
        if method == "ModelReady":  # an unknown model is not an error: it is not ready
            assert code in (Code.OK, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED), code
    prop()
    for method in ("ServerLive", "ServerReady", "ServerMetadata"):  # no fields: one case each
        code, _ = f.call(getattr(f.v2, method), getattr(v2, f"{method}Request")(), ())
        assert code == Code.OK


def undecodable_wire_bytes(f: Fuzz, examples: int) -> None:
    """Bytes no protobuf client would send (bad UTF-8, cut short, noise), through a channel with identity serializers."""
    kinds = {(False, False): f.p.channel.unary_unary, (True, False): f.p.channel.unary_stream,
             (True, True): f.p.channel.stream_stream}

    @fuzz_settings(examples)
    @given(st.sampled_from(fs.RPCS).flatmap(lambda rpc: st.tuples(st.just(rpc), fs.undecodable(rpc[2], rpc[3]))))
    def prop(case: tuple) -> None:
        (service, method, message_class, _, response_streaming, request_streaming), raw = case
        rpc = kinds[response_streaming, request_streaming](f"/{service}/{method}")  # no serializers: bytes as they are
        request = [raw] if request_streaming else raw
        code, replies = f.call(rpc, request, names(message_class) | {"request"}, streaming=response_streaming)
        if request_streaming:  # a stream whose message cannot be read fails as a whole
            assert code in (Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED) or (code == Code.OK and replies), code
    prop()


PROPERTIES = {generate: 120, classify: 60, get_model: 40, trace: 60, translate: 80, translate_batch: 40, model_infer: 150,
              model_stream_infer: 40, metadata_config_ready: 60, undecodable_wire_bytes: 150}
WARM_UP_SHARE = 4  # the warm-up runs each property with 1/4 of its examples


@pytest.fixture(scope="module")
def baseline_kb(fuzz) -> int:
    """VmRSS after a warm-up: a shorter run of every property, so that allocator arenas and caches have grown."""
    for prop, examples in PROPERTIES.items():
        prop(fuzz, examples // WARM_UP_SHARE)
    WARM_UP.update(CASES)
    CASES.clear()
    return rss_kb(fuzz.p.proc.pid)


@pytest.mark.parametrize("prop", PROPERTIES, ids=lambda prop: prop.__name__)
def test_property(fuzz, baseline_kb, prop):
    prop(fuzz, PROPERTIES[prop])
    fuzz.assert_alive()
    RSS_KB[prop.__name__] = rss_kb(fuzz.p.proc.pid)


def test_memory_returns_to_baseline_and_count(fuzz, baseline_kb, capsys):
    """Runs last: after every property above, the process holds no more than its warmed-up RSS plus a margin."""
    after = rss_kb(fuzz.p.proc.pid)
    calls = sum(v for k, v in CASES.items() if k != "ModelStreamInfer requests")
    with capsys.disabled():
        print(f"\nfuzz: {calls} calls (+{CASES['ModelStreamInfer requests']} requests inside ModelStreamInfer streams), "
              f"after a warm-up of {sum(v for k, v in WARM_UP.items() if k != 'ModelStreamInfer requests')} calls; "
              f"server VmRSS {baseline_kb} kB after the warm-up, {after} kB after the fuzz ({after - baseline_kb:+d} kB)")
        for name, n in sorted(CASES.items()):
            print(f"  {n:5d}  {name}")
        print("  VmRSS after each property: " + ", ".join(f"{k} {v} kB" for k, v in RSS_KB.items()))
    assert after <= baseline_kb + RSS_MARGIN_KB
