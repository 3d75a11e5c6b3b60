"""Requests protobuf cannot parse get INVALID_ARGUMENT naming the field at fault, from one server interceptor.

protobuf's DecodeError says only "String field had bad UTF-8" or "Wire format was corrupt"; this walks
the wire format (https://protobuf.dev/programming-guides/encoding/) to find the string field at fault.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from service import metrics

VARINT, I64, LEN, I32 = 0, 1, 2, 5


def _varint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while shift < 64:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        n, i, shift = n | (b & 0x7F) << shift, i + 1, shift + 7
        if not b & 0x80:
            return n, i
    raise ValueError("varint too long")


def bad_utf8_field(data: bytes, message: Descriptor) -> str | None:
    """The path (`prompt`, `stop[1]`, `inputs[0].name`) of the first string field that is not UTF-8, or None
    when there is none or the wire format breaks before one is found."""
    seen: Counter[int] = Counter()
    i = 0
    try:
        while i < len(data):
            key, i = _varint(data, i)
            number, wire_type = key >> 3, key & 7
            if wire_type == VARINT:
                _, i = _varint(data, i)
                continue
            if wire_type in (I64, I32):
                i += 8 if wire_type == I64 else 4
                continue
            if wire_type != LEN:
                return None
            n, i = _varint(data, i)
            chunk, i = data[i:i + n], i + n
            field = message.fields_by_number.get(number)
            if field is None:
                continue
            path = field.name
            if field.is_repeated:
                path, seen[number] = f"{path}[{seen[number]}]", seen[number] + 1
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    chunk.decode()
                except UnicodeDecodeError:
                    return path
            elif field.type == FieldDescriptor.TYPE_MESSAGE and (inner := bad_utf8_field(chunk, field.message_type)):
                return f"{path}.{inner}"
    except ValueError:
        return None
    return None


def why_undecodable(data: bytes, message: Descriptor | None, err: Exception) -> str:
    """The client-facing reason a request could not be parsed, naming the field when one is at fault."""
    if message is not None and (path := bad_utf8_field(data, message)):
        return f"{path}: not valid UTF-8 (protobuf string fields must be UTF-8; send binary data as bytes)"
    reason = str(err).rpartition(": ")[2] or "cannot be parsed"
    kind = message.full_name if message is not None else "request"
    return f"request: not a valid {kind} message ({reason}, {len(data)} bytes)"


class Undecodable:
    """Stands in for a request message protobuf could not parse, until the handler can refuse it."""

    def __init__(self, why: str) -> None:
        self.why = why


class RefuseUndecodable(grpc.aio.ServerInterceptor):
    """A request that is not a valid protobuf message gets INVALID_ARGUMENT naming the field at fault.

    grpc's aio server answers a request its deserializer cannot parse with UNKNOWN ("Unexpected
    <class 'DecodeError'>") and a traceback in the log; protobuf clients never send such bytes, but
    any other client can (invalid UTF-8 in a string field, a truncated message).
    """

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return _guarded(handler, details.method.rpartition("/")[2])


def _guarded(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """The same handler, its deserializer returning Undecodable instead of raising, its behavior refusing one."""
    parse = handler.request_deserializer
    message = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)  # X.FromString: the class X

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as err:
            return Undecodable(why_undecodable(data, message, err))

    def refused(request: Any, context: grpc.aio.ServicerContext) -> bool:
        """Sets INVALID_ARGUMENT for an undecodable request (like rpc's fail, without abort's reference cycle)."""
        if not isinstance(request, Undecodable):
            return False
        metrics.count_refused(method, grpc.StatusCode.INVALID_ARGUMENT.name)
        context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
        context.set_details(request.why)
        return True

    async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """A request stream that ends the call at its first undecodable message (abort: the handler is mid-stream)."""
        async for request in requests:
            if refused(request, context):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.why)
            yield request

    streaming = handler.request_streaming
    behavior = {(False, False): handler.unary_unary, (False, True): handler.unary_stream,
                (True, False): handler.stream_unary, (True, True): handler.stream_stream}[streaming, handler.response_streaming]
    if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
        return handler  # a synchronous handler runs in grpc's thread pool: left as it is

    if inspect.isasyncgenfunction(behavior):
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if streaming:
                request = checked(request, context)
            elif refused(request, context):
                return
            async for reply in behavior(request, context):
                yield reply
    else:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if streaming:
                request = checked(request, context)
            elif refused(request, context):
                return None
            return await behavior(request, context)

    make = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}
    return make[streaming, handler.response_streaming](
        guarded, request_deserializer=deserialize, response_serializer=handler.response_serializer)
