"""The Open Inference Protocol's HTTP/REST body (JSON, with Triton's binary tensor extension) as the gRPC messages.

A request becomes the v2.ModelInferRequest the gRPC servicer takes, so service.api.v2_params validates both
the same way; a reply's raw_output_contents become JSON `data` or, where the client asked, binary tensor data.
Binary data extension: the body is the JSON header (its length in the Inference-Header-Content-Length header),
then each binary input's bytes in input order, each input's size in its `parameters.binary_data_size`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from service.api import v2_params
from service.errors import InvalidArgument
from service.gen.inference import grpc_service_pb2 as v2

HEADER_LENGTH = "inference-header-content-length"
BINARY_SIZE, BINARY_OUTPUT, BINARY = "binary_data_size", "binary_data_output", "binary_data"
REQUEST_KEYS = {"id", "parameters", "inputs", "outputs"}
NUMPY = {"FP32": "<f4"}  # the datatypes rnnserve returns besides BYTES


@dataclass
class InferRequest:
    """A decoded HTTP infer request: the gRPC message, and which outputs go back as binary data."""

    message: v2.ModelInferRequest
    binary_outputs: set[str]
    all_binary: bool  # the request's binary_data_output parameter: every output not asked for otherwise


def _json(data: bytes) -> dict:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as err:  # ValueError: bad JSON or bad UTF-8
        raise InvalidArgument("request", f"not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("request", f"must be a JSON object, got {type(doc).__name__}")
    return doc


def _object(doc: dict, key: str, field: str) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise InvalidArgument(field, f"must be a JSON object, got {type(value).__name__}")
    return value


def _list(doc: dict, key: str, field: str) -> list:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise InvalidArgument(field, f"must be a JSON array, got {type(value).__name__}")
    return value


def _set_param(target: v2.InferParameter, value: object, field: str) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        if not -(1 << 63) <= value < 1 << 63:
            raise InvalidArgument(field, f"{value} is out of the int64 range")
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    elif isinstance(value, str):
        target.string_param = value
    else:
        raise InvalidArgument(field, f"must be a boolean, number or string, got {type(value).__name__}")


def _flat(data: object) -> list:
    """A tensor's `data`: nested arrays in row-major order, flattened."""
    if not isinstance(data, list):
        return [data]
    out: list = []
    stack = [iter(data)]
    while stack:  # iterative: a deeply nested array must not exhaust the recursion limit
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """The request's gRPC form; InvalidArgument naming the field for anything malformed."""
    if header_length is None:
        head, tail = body, b""
    else:
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
            raise InvalidArgument("Inference-Header-Content-Length",
                                  f"must be the JSON header's length in bytes (0..{len(body)}), got {header_length!r}")
        head, tail = body[:int(header_length)], body[int(header_length):]
    doc = _json(head)
    if unknown := sorted(set(doc) - REQUEST_KEYS):
        raise InvalidArgument(unknown[0] or '""', f"unknown field; an infer request has {', '.join(sorted(REQUEST_KEYS))}")
    request = v2.ModelInferRequest()
    if not isinstance(doc.get("id", ""), str):
        raise InvalidArgument("id", "must be a string")
    request.id = doc.get("id", "")
    params = _object(doc, "parameters", "parameters")
    all_binary = params.pop(BINARY_OUTPUT, False)
    if not isinstance(all_binary, bool):
        raise InvalidArgument(f"parameters.{BINARY_OUTPUT}", "must be a boolean")
    for key, value in params.items():
        _set_param(request.parameters[key], value, f"parameters.{key}")
    offset = 0
    for i, item in enumerate(_list(doc, "inputs", "inputs")):
        offset = _add_input(request, item, i, tail, offset)
    if offset != len(tail):
        raise InvalidArgument("request", f"{len(tail) - offset} bytes of binary data past the inputs' binary_data_size")
    binary = set()
    for i, item in enumerate(_list(doc, "outputs", "outputs")):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidArgument(f"outputs[{i}]", 'must be an object with a string "name"')
        out = request.outputs.add(name=item["name"])
        out_params = _object(item, "parameters", f"outputs[{i}].parameters")
        if out_params.pop(BINARY, False) is True:
            binary.add(item["name"])
        for key, value in out_params.items():  # anything else goes to v2_params, which refuses it by name
            _set_param(out.parameters[key], value, f"outputs[{i}].parameters.{key}")
    return InferRequest(request, binary, all_binary)


def _add_input(request: v2.ModelInferRequest, item: object, i: int, tail: bytes, offset: int) -> int:
    """Append input i (JSON data or binary data from tail at offset); returns the new offset."""
    field = f"inputs[{i}]"
    if not isinstance(item, dict):
        raise InvalidArgument(field, "must be a JSON object")
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise InvalidArgument(field, 'needs a string "name" and a string "datatype"')
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 62
                                              for d in shape):
        raise InvalidArgument(f"{field}.shape", "must be an array of non-negative integers")
    t = request.inputs.add(name=name, datatype=datatype, shape=shape)
    params = _object(item, "parameters", f"{field}.parameters")
    size = params.pop(BINARY_SIZE, None)
    for key, value in params.items():
        _set_param(t.parameters[key], value, f"{field}.parameters.{key}")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(tail) - offset:
            raise InvalidArgument(f"{field}.parameters.{BINARY_SIZE}",
                                  f"must be the input's byte count (0..{len(tail) - offset} left), got {size!r}")
        if "data" in item:
            raise InvalidArgument(f"{field}.data", f"must be absent when {BINARY_SIZE} is given")
        request.raw_input_contents.append(tail[offset:offset + size])
        return offset + size
    if datatype == "BYTES":  # other datatypes are refused by v2_params before any data is read
        data = _flat(item.get("data", []))
        if not all(isinstance(s, str) for s in data):
            raise InvalidArgument(f"{field}.data", "BYTES elements must be strings")
        t.contents.bytes_contents.extend(s.encode() for s in data)
    return offset


def _param(p: v2.InferParameter) -> bool | int | float | str | None:
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


def infer_response(reply: v2.ModelInferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """The HTTP body, and the JSON header's length when binary data follows it (else None)."""
    doc: dict = {"model_name": reply.model_name, "model_version": reply.model_version}
    if reply.id:
        doc["id"] = reply.id
    if reply.parameters:
        doc["parameters"] = {k: _param(p) for k, p in reply.parameters.items()}
    outputs, tail = [], []
    for out, raw in zip(reply.outputs, reply.raw_output_contents, strict=True):
        o: dict = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        if out.name in request.binary_outputs or (request.all_binary and not request.message.outputs):
            o["parameters"] = {BINARY_SIZE: len(raw)}
            tail.append(raw)
        elif out.datatype == "BYTES":
            o["data"] = [b.decode() for b in v2_params.unpack_bytes(raw, out.name)]
        else:
            o["data"] = np.frombuffer(raw, NUMPY[out.datatype]).tolist()
        outputs.append(o)
    doc["outputs"] = outputs
    head = json.dumps(doc).encode()
    return (head + b"".join(tail), len(head)) if tail else (head, None)
