"""Hypothesis strategies for tests/service/robustness/test_fuzz.py: hostile values for every request field, native and v2."""

from __future__ import annotations

import json
import struct
from urllib.parse import quote

from google.protobuf import json_format
from hypothesis import strategies as st

from service.gen.inference import grpc_service_pb2 as v2
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb

MODELS = ("tiny-lstm", "tiny-gru", "tiny-sentiment", "tiny-translator", "tiny-captioner")
MB = 1 << 20

# Characters that break naive code: NUL, controls, a combining mark, zero-width joiner, BOM, RTL override,
# the replacement character, a noncharacter, astral characters (emoji, math), the largest code point.
SPECIAL = "\x00\x01\x7f\n\r\t \u0301\u200d\ufeff\u202e\ufffd\uffff\U0001f600\U0001d11e\U0010ffff"

_small_text = st.text(max_size=40) | st.text(alphabet=SPECIAL, max_size=40)
# ~1 MB of UTF-8, built by repeating a short unit (hypothesis does not draw megabyte strings itself).
_megabyte_text = st.text(alphabet=SPECIAL + "ab", min_size=1, max_size=4).map(
    lambda unit: unit * (MB // len(unit.encode())))
texts = _small_text | st.sampled_from(["", "\x00", "e\u0301" * 3, "\U0001f600" * 3]) | _megabyte_text

INT32 = (-(1 << 31), (1 << 31) - 1)
INT64 = (-(1 << 63), (1 << 63) - 1)
UINT32, UINT64 = (0, (1 << 32) - 1), (0, (1 << 64) - 1)


def ints(lo: int, hi: int, small: int = 100) -> st.SearchStrategy[int]:
    """The type's whole range, with its ends and the small values fields care about."""
    return st.integers(lo, hi) | st.sampled_from([lo, hi, 0, 1]) | st.integers(max(lo, -small), min(hi, small))


floats = st.floats(width=32) | st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 1.0, 1e-45])
doubles = st.floats() | st.sampled_from([float("nan"), float("inf"), -0.0, 1e308, 5e-324])
model_names = st.sampled_from(MODELS) | texts


def repeated(element: st.SearchStrategy, filler: object) -> st.SearchStrategy[list]:
    """Empty, short, or oversized (thousands of entries) lists."""
    return st.lists(element, max_size=8) | st.integers(100, 20_000).map(lambda n: [filler] * n)


@st.composite
def generate_requests(draw: st.DrawFn) -> pb.GenerateRequest:
    req = pb.GenerateRequest(model=draw(st.sampled_from(MODELS[:2]) | model_names), version=draw(ints(*UINT32, 2)),
                             prompt=draw(texts), top_k=draw(ints(*INT32)), stop=draw(repeated(texts, "x")),
                             logprobs=draw(st.booleans()), flush_chars=draw(ints(*UINT32, 5000)),
                             flush_ms=draw(ints(*UINT32, 20_000)))
    for name, values in (("max_tokens", ints(*INT32)), ("temperature", floats), ("top_p", floats), ("seed", ints(*UINT64))):
        if (value := draw(st.none() | values)) is not None:  # unset and set-to-zero differ for optional fields
            setattr(req, name, value)
    return req


classify_requests = st.builds(pb.ClassifyRequest, model=st.just("tiny-sentiment") | model_names,
                              version=ints(*UINT32, 2), texts=repeated(texts, "fine"))
get_model_requests = st.builds(pb.GetModelRequest, name=model_names, version=ints(*UINT32, 2))
trace_requests = st.builds(pb.TraceRequest, model=st.sampled_from(MODELS[:2]) | model_names, version=ints(*UINT32, 2),
                           text=texts, layers=repeated(ints(*UINT32, 3), 0), units=repeated(ints(*UINT32, 40), 1),
                           top_k=ints(*UINT32, 25))



@st.composite
def translate_requests(draw: st.DrawFn) -> pb.TranslateRequest:
    req = pb.TranslateRequest(model=draw(st.just("tiny-translator") | model_names), version=draw(ints(*UINT32, 2)),
                              text=draw(texts), beam_size=draw(ints(*UINT32, 10)), return_attention=draw(st.booleans()),
                              flush_chars=draw(ints(*UINT32, 5000)), flush_ms=draw(ints(*UINT32, 20_000)))
    for name, values in (("max_tokens", ints(*INT32)), ("length_penalty", floats)):
        if (value := draw(st.none() | values)) is not None:  # unset and set-to-zero differ for optional fields
            setattr(req, name, value)
    return req


@st.composite
def translate_batch_requests(draw: st.DrawFn) -> pb.TranslateBatchRequest:
    req = pb.TranslateBatchRequest(model=draw(st.just("tiny-translator") | model_names), version=draw(ints(*UINT32, 2)),
                                   texts=draw(repeated(texts, "Hund")), beam_size=draw(ints(*UINT32, 10)),
                                   return_attention=draw(st.booleans()))
    for name, values in (("max_tokens", ints(*INT32)), ("length_penalty", floats)):
        if (value := draw(st.none() | values)) is not None:
            setattr(req, name, value)
    return req


# v2 (Open Inference Protocol)
versions = st.sampled_from(["", "1", "0", "01", "-1", "1.0", " 1", "\u00b9", "\u0662", "\uff11", "9" * 30]) | texts
infer_parameters = st.one_of(
    st.builds(v2.InferParameter), st.builds(v2.InferParameter, bool_param=st.booleans()),
    st.builds(v2.InferParameter, int64_param=ints(*INT64, 300)),
    st.builds(v2.InferParameter, uint64_param=ints(*UINT64, 300)),
    st.builds(v2.InferParameter, double_param=doubles),
    st.builds(v2.InferParameter, string_param=texts | st.sampled_from(['["a", "b"]', '[""]', "[1]", "[" * 100_000])))
PARAM_NAMES = ("max_tokens", "top_k", "seed", "flush_chars", "flush_ms", "temperature", "top_p", "stop", "beam_size",
               "length_penalty", "triton_enable_empty_final_response")
parameter_maps = st.dictionaries(st.sampled_from(PARAM_NAMES) | texts, infer_parameters, max_size=5)
DATATYPES = ("BYTES", "FP32", "INT64", "BOOL", "UINT8", "FP16", "")
element_bytes = st.binary(max_size=20) | texts.map(str.encode)
tensor_contents = st.builds(v2.InferTensorContents, bytes_contents=repeated(element_bytes, b"a"),
                            fp32_contents=st.lists(floats, max_size=4), int64_contents=st.lists(ints(*INT64), max_size=4),
                            bool_contents=st.lists(st.booleans(), max_size=4))


def packed(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


# BYTES raw contents: well formed, cut short, lying about a length, or noise.
raw_contents = (st.lists(element_bytes, max_size=4).map(packed)
                | st.tuples(st.lists(element_bytes, min_size=1, max_size=4).map(packed), st.integers(1, 8)).map(
                    lambda t: t[0][:-t[1]])
                | st.builds(lambda n, b: struct.pack("<I", n) + b, ints(*UINT32), st.binary(max_size=8))
                | st.binary(max_size=40))
input_tensors = st.builds(
    v2.ModelInferRequest.InferInputTensor, name=st.sampled_from(["prompt", "text"]) | texts,
    datatype=st.sampled_from(DATATYPES) | texts, shape=st.lists(ints(*INT64, 3), max_size=3) | st.just([1]),
    parameters=parameter_maps, contents=tensor_contents | st.just(v2.InferTensorContents()))
output_tensors = st.builds(v2.ModelInferRequest.InferRequestedOutputTensor,
                           name=st.sampled_from(["text", "label", "probabilities"]) | texts, parameters=parameter_maps)
infer_requests = st.builds(
    v2.ModelInferRequest, model_name=model_names, model_version=st.just("") | versions, id=texts,
    parameters=parameter_maps, inputs=st.lists(input_tensors, max_size=2) | st.just([]),
    outputs=st.lists(output_tensors, max_size=3), raw_input_contents=st.lists(raw_contents, max_size=2))


@st.composite
def wellformed_infer_requests(draw: st.DrawFn) -> v2.ModelInferRequest:
    """Right model, input name, datatype and shape, so that hostile contents and parameters reach the engines."""
    model = draw(st.sampled_from(MODELS))
    items = [t.encode() for t in draw(st.lists(_small_text, min_size=1, max_size=1 if model in MODELS[:2] else 4))]
    req = v2.ModelInferRequest(model_name=model, id=draw(_small_text), parameters=draw(parameter_maps))
    tensor = req.inputs.add(name="prompt" if model in MODELS[:2] else "text", datatype="BYTES", shape=[len(items)])
    if draw(st.booleans()):
        req.raw_input_contents.append(packed(items))
    else:
        tensor.contents.bytes_contents.extend(items)
    return req


# Invalid UTF-8: a lone byte, a CESU-encoded (lone) surrogate, an overlong NUL, past U+10FFFF, a cut sequence.
BAD_UTF8 = (b"\xff", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xc0\x80", b"\xf4\x90\x80\x80", b"a\x80", b"\xe2\x82")


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


@st.composite
def undecodable(draw: st.DrawFn, message_class: type, valid: st.SearchStrategy) -> bytes:
    """Wire bytes the Python client cannot send: bad UTF-8 in a string field (top level or one message down),
    a valid message cut short, or noise."""
    good = draw(valid).SerializeToString()
    strings = [f for f in message_class.DESCRIPTOR.fields if f.type == f.TYPE_STRING]
    nested = [(f, g) for f in message_class.DESCRIPTOR.fields if f.type == f.TYPE_MESSAGE
              for g in f.message_type.fields if g.type == g.TYPE_STRING]
    bad = draw(st.sampled_from(BAD_UTF8)) + draw(st.binary(max_size=4))
    choices = ["noise"] + ["string"] * bool(strings) + ["nested"] * bool(nested) + ["truncated"] * (len(good) > 1)
    how = draw(st.sampled_from(choices))
    if how == "string":
        return good + length_delimited(draw(st.sampled_from(strings)).number, bad)
    if how == "nested":
        outer, inner = draw(st.sampled_from(nested))
        return good + length_delimited(outer.number, length_delimited(inner.number, bad))
    if how == "truncated":
        return good[:draw(st.integers(1, len(good) - 1))]
    return draw(st.binary(min_size=1, max_size=64))


# Every RPC: (service, method, request class, valid requests, response streaming, request streaming).
RPCS = (
    ("rnnserve.v1.Inference", "Generate", pb.GenerateRequest,
     st.builds(pb.GenerateRequest, model=st.sampled_from(MODELS), prompt=_small_text, max_tokens=st.integers(1, 8)), True, False),
    ("rnnserve.v1.Inference", "Classify", pb.ClassifyRequest,
     st.builds(pb.ClassifyRequest, model=st.sampled_from(MODELS), texts=st.lists(_small_text, max_size=3)), False, False),
    ("rnnserve.v1.Inference", "ListModels", pb.ListModelsRequest, st.builds(pb.ListModelsRequest), False, False),
    ("rnnserve.v1.Inference", "GetModel", pb.GetModelRequest, st.builds(pb.GetModelRequest, name=st.sampled_from(MODELS)),
     False, False),
    ("rnnserve.v1.Inference", "Translate", pb.TranslateRequest,
     st.builds(pb.TranslateRequest, model=st.just("tiny-translator"), text=_small_text, max_tokens=st.integers(1, 8)),
     True, False),
    ("rnnserve.v1.Inference", "TranslateBatch", pb.TranslateBatchRequest,
     st.builds(pb.TranslateBatchRequest, model=st.just("tiny-translator"), texts=st.lists(_small_text, max_size=3)),
     False, False),
    ("rnnserve.v1.Inference", "Trace", pb.TraceRequest,
     st.builds(pb.TraceRequest, model=st.sampled_from(MODELS), text=_small_text), True, False),
    ("rnnserve.v1.Admin", "ReloadModels", pb.ReloadModelsRequest, st.builds(pb.ReloadModelsRequest), False, False),
    *(("inference.GRPCInferenceService", m, getattr(v2, f"{m}Request"),
       st.builds(getattr(v2, f"{m}Request"), name=st.sampled_from(MODELS)), False, False)
      for m in ("ModelMetadata", "ModelConfig", "ModelReady")),
    *(("inference.GRPCInferenceService", m, getattr(v2, f"{m}Request"), st.builds(getattr(v2, f"{m}Request")), False, False)
      for m in ("ServerLive", "ServerReady", "ServerMetadata")),
    ("inference.GRPCInferenceService", "ModelInfer", v2.ModelInferRequest, wellformed_infer_requests(), False, False),
    ("inference.GRPCInferenceService", "ModelStreamInfer", v2.ModelInferRequest, wellformed_infer_requests(), True, True),
)


# ---- HTTP: routes, and bodies of every shape
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | ints(-(1 << 70), 1 << 70) | st.floats(allow_nan=False, allow_infinity=False) | _small_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
FIELD_VALUES = JSON_VALUES | st.sampled_from(["tiny-lstm", "tiny-sentiment", "ROMEO:", 1, 0, -1, 0.5, True, [], {}])
HTTP_FIELDS = ("model", "prompt", "max_tokens", "temperature", "top_k", "top_p", "seed", "stop", "logprobs", "stream",
               "flush_chars", "flush_ms", "texts", "text", "layers", "units", "version", "n", "echo",
               "stream_options", "inputs", "outputs", "parameters", "id", "beam_size", "length_penalty",
               "return_attention")
HTTP_POST = ("/v1/generate", "/v1/classify", "/v1/trace", "/v1/translate", "/v1/translate_batch", "/v1/completions",
             "/v2/models/tiny-lstm/infer", "/v2/models/tiny-sentiment/infer", "/v2/models/tiny-sentiment/versions/1/infer")
HTTP_GET = ("/v1/models", "/v1/models/tiny-lstm", "/v2", "/v2/health/ready", "/v2/models/tiny-lstm",
            "/v2/models/tiny-sentiment/config", "/v2/models/tiny-lstm/ready")


def _path_segment(text: str) -> str:
    """A fuzzed name in a URL: percent-encoded, cut to what a request line carries (a megabyte URL is refused by the
    HTTP parser itself, before any route)."""
    return quote(text[:200], safe="") or "x"


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[str, str, object]:
    """(method, path, body): known routes with fuzzed bodies, fuzzed model names and versions in paths, unknown paths."""
    name, version = _path_segment(draw(model_names)), _path_segment(draw(versions))
    path = draw(st.sampled_from(HTTP_POST) | st.sampled_from(HTTP_GET) | st.sampled_from([
        f"/v2/models/{name}/infer", f"/v2/models/{name}/versions/{version}/infer", f"/v1/models/{name}",
        f"/v2/models/{name}/versions/{version}/ready", f"/v2/models/{name}/versions/{version}/config",
        f"/{name}", f"/v1/models/tiny-lstm?version={version}"]))
    method = draw(st.sampled_from(["POST", "GET"]) if draw(st.booleans()) else st.just(
        "POST" if path in HTTP_POST or path.endswith("/infer") else "GET"))
    fields = st.dictionaries(st.sampled_from(HTTP_FIELDS), FIELD_VALUES, max_size=6)
    native = (generate_requests() | translate_requests()).map(
        lambda r: {**json_format.MessageToDict(r, preserving_proto_field_name=True), "stream": True})
    native |= translate_batch_requests().map(lambda r: json_format.MessageToDict(r, preserving_proto_field_name=True))
    body = draw(fields | native | JSON_VALUES | st.binary(max_size=64))
    return method, path, body if isinstance(body, bytes) else json.dumps(body).encode()
