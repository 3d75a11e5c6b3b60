"""Open Inference Protocol (v2) requests as native requests (validated by service.api.params) and results as v2 tensors."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from service.errors import InvalidArgument
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb

INT_PARAMS = ("max_tokens", "top_k", "seed", "flush_chars", "flush_ms")
FLOAT_PARAMS = ("temperature", "top_p")
LM_PARAMS = (*INT_PARAMS, *FLOAT_PARAMS, "stop")
TRANSLATE_INT_PARAMS = ("beam_size", "max_tokens", "flush_chars", "flush_ms")
TRANSLATE_PARAMS = (*TRANSLATE_INT_PARAMS, "length_penalty")
RESERVED_PREFIX = "triton_"  # set by clients for the server itself (e.g. triton_enable_empty_final_response)
FINAL = "triton_final_response"  # Triton's marker of a decoupled stream's last response to a request


@dataclass(frozen=True)
class Tensor:
    """One tensor of a model's signature: shape -1 is any size, C the number of classes."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def unpack_bytes(raw: bytes, field: str) -> list[bytes]:
    """BYTES raw contents: each element a 4-byte little-endian length, then that many bytes."""
    items, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise InvalidArgument(field, "truncated BYTES element length")
        (n,) = struct.unpack_from("<I", raw, i)
        if i + 4 + n > len(raw):
            raise InvalidArgument(field, f"BYTES element of {n} bytes runs past the end of the data")
        items.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    return items


def pack_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def input_bytes(req: v2.ModelInferRequest, model: str, spec: Tensor) -> list[bytes]:
    """The elements of the model's one BYTES input, checked for name, datatype and shape."""
    names = [t.name for t in req.inputs]
    for i, name in enumerate(names):
        if name != spec.name:
            raise InvalidArgument(f"inputs[{i}].name", f"model {model!r} has no input {name!r}; its input is {spec.name!r}")
    if not names:
        raise InvalidArgument("inputs", f"missing input {spec.name!r} ({spec.datatype}, shape {list(spec.shape)})")
    if len(names) > 1:
        raise InvalidArgument("inputs", f"input {spec.name!r} is given {len(names)} times")
    t = req.inputs[0]
    field = f"inputs[{spec.name!r}]"
    if t.datatype != spec.datatype:
        raise InvalidArgument(f"{field}.datatype", f"must be {spec.datatype}, got {t.datatype or 'none'}")
    want = spec.shape
    if len(t.shape) != len(want) or any(w not in (-1, s) for w, s in zip(want, t.shape, strict=True)) or min(t.shape) < 1:
        raise InvalidArgument(f"{field}.shape", f"must be {list(want)} (-1: any size >= 1), got {list(t.shape)}")
    if req.raw_input_contents:
        if len(req.raw_input_contents) != 1:
            raise InvalidArgument("raw_input_contents", f"{len(req.raw_input_contents)} entries for 1 input")
        items = unpack_bytes(req.raw_input_contents[0], field)
    else:
        items = list(t.contents.bytes_contents)
    if len(items) != int(np.prod(t.shape)):
        raise InvalidArgument(field, f"shape {list(t.shape)} holds {int(np.prod(t.shape))} elements, the data has {len(items)}")
    return items


def input_texts(req: v2.ModelInferRequest, model: str, spec: Tensor) -> list[str]:
    """The strings of the model's one BYTES input, checked for name, datatype, shape and encoding."""
    items = input_bytes(req, model, spec)
    try:
        return [b.decode() for b in items]
    except UnicodeDecodeError as err:
        raise InvalidArgument(f"inputs[{spec.name!r}]", f"element is not UTF-8: {err}") from None


def requested_outputs(req: v2.ModelInferRequest, model: str, outputs: list[Tensor]) -> list[Tensor]:
    """The outputs to return, in the model's order: those asked for, or all."""
    known = {o.name for o in outputs}
    for i, o in enumerate(req.outputs):
        if o.name not in known:
            raise InvalidArgument(f"outputs[{i}].name", f"model {model!r} has no output {o.name!r}; its outputs: "
                                                        f"{', '.join(sorted(known))}")
        if o.parameters:
            raise InvalidArgument(f"outputs[{i}].parameters", f"not supported (got {', '.join(sorted(o.parameters))}); "
                                                              "the classifier returns every class's probability")
    asked = {o.name for o in req.outputs}
    return [o for o in outputs if not asked or o.name in asked]


def _value(p: v2.InferParameter) -> bool | int | float | str | None:
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


def _check_params(req: v2.ModelInferRequest, model: str, accepted: tuple[str, ...]) -> dict:
    params = {k: _value(p) for k, p in req.parameters.items() if not k.startswith(RESERVED_PREFIX)}
    for k in sorted(params):
        if k not in accepted:
            raise InvalidArgument(f"parameters.{k}", f"unknown parameter for model {model!r}; it accepts: "
                                                     f"{', '.join(accepted) or 'none'}")
    return params


def generate_request(req: v2.ModelInferRequest, model: str, spec: Tensor) -> pb.GenerateRequest:
    """The native GenerateRequest, for service.api.params.generate_params to validate like any other."""
    (prompt,) = input_texts(req, model, spec)
    native = pb.GenerateRequest(model=model, prompt=prompt)
    for k, v in _check_params(req, model, LM_PARAMS).items():
        if k == "stop":
            native.stop.extend(_stop(v))
            continue
        if isinstance(v, bool) or not isinstance(v, int if k in INT_PARAMS else int | float):
            raise InvalidArgument(f"parameters.{k}", f"must be {'an integer' if k in INT_PARAMS else 'a number'}, got {v!r}")
        try:
            setattr(native, k, v)
        except (ValueError, TypeError):
            raise InvalidArgument(f"parameters.{k}", f"{v} is out of range") from None
    return native


def _stop(v: object) -> list[str]:
    """stop: one stop sequence, or a JSON array of them."""
    if not isinstance(v, str):
        raise InvalidArgument("parameters.stop", f"must be a string or a JSON array of strings, got {v!r}")
    try:
        seqs = json.loads(v)
    except (ValueError, RecursionError):  # RecursionError: arrays nested too deep for the parser
        return [v]
    if isinstance(seqs, list) and all(isinstance(s, str) for s in seqs):
        return seqs
    return [v]


def _search_options(req: v2.ModelInferRequest, model: str, native: pb.TranslateRequest | pb.CaptionRequest) -> None:
    """The search and flush parameters (TRANSLATE_PARAMS) set on a native request, checked for type and range."""
    for k, v in _check_params(req, model, TRANSLATE_PARAMS).items():
        integer = k in TRANSLATE_INT_PARAMS
        if isinstance(v, bool) or not isinstance(v, int if integer else int | float):
            raise InvalidArgument(f"parameters.{k}", f"must be {'an integer' if integer else 'a number'}, got {v!r}")
        try:
            setattr(native, k, v)
        except (ValueError, TypeError):
            raise InvalidArgument(f"parameters.{k}", f"{v} is out of range") from None


def translate_request(req: v2.ModelInferRequest, model: str, spec: Tensor) -> tuple[list[str], pb.TranslateRequest]:
    """The texts, and a native TranslateRequest carrying the search and flush options for
    service.api.translate_params to validate like any other."""
    texts = input_texts(req, model, spec)
    native = pb.TranslateRequest(model=model)
    _search_options(req, model, native)
    return texts, native


def caption_request(req: v2.ModelInferRequest, model: str, spec: Tensor) -> tuple[list[bytes], pb.CaptionRequest]:
    """The image files' bytes, and a native CaptionRequest carrying the search and flush options (as Translate's)."""
    images = input_bytes(req, model, spec)
    native = pb.CaptionRequest(model=model)
    _search_options(req, model, native)
    return images, native


def classify_request(req: v2.ModelInferRequest, model: str, spec: Tensor) -> pb.ClassifyRequest:
    """The native ClassifyRequest, for service.api.params.classify_rows to validate like any other."""
    texts = input_texts(req, model, spec)
    _check_params(req, model, ())
    return pb.ClassifyRequest(model=model, texts=texts)


def set_params(target, values: dict[str, bool | int | float | str]) -> None:  # target: map<string, InferParameter>
    for k, v in values.items():
        if isinstance(v, bool):
            target[k].bool_param = v
        elif isinstance(v, int):
            target[k].int64_param = v
        elif isinstance(v, float):
            target[k].double_param = v
        else:
            target[k].string_param = v


def reply_to(req: v2.ModelInferRequest, model: str, version: int) -> v2.ModelInferResponse:
    """A response to `req` without outputs yet: which model version answers, and the request's id."""
    return v2.ModelInferResponse(model_name=model, model_version=str(version), id=req.id)


def add_output(reply: v2.ModelInferResponse, spec: Tensor, shape: tuple[int, ...], raw: bytes) -> None:
    reply.outputs.add(name=spec.name, datatype=spec.datatype, shape=shape)
    reply.raw_output_contents.append(raw)
