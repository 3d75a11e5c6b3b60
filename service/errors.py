"""Domain exceptions and the one place that turns them (and anything unexpected) into gRPC status codes."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from service import metrics
from service.wire import why_undecodable

log = logging.getLogger("rnnserve")


class ServiceError(Exception):
    code = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceError):  # noqa: N818 (named after its status code)
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field


class NotFound(ServiceError):  # noqa: N818 (named after its status code)
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(ServiceError):  # noqa: N818 (named after its status code)
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):  # noqa: N818 (named after its status code)
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):  # noqa: N818 (named after its status code)
    code = grpc.StatusCode.UNAVAILABLE


class OverBudget(ServiceError):  # noqa: N818 (the server's own deadline)
    code = grpc.StatusCode.DEADLINE_EXCEEDED

    def __init__(self, budget_s: float) -> None:
        super().__init__(f"the server's time budget for a request ran out: max_request_s = {budget_s:g} s")


# The client's deadline timer usually fires (and cancels the call) a moment before the server's
# copy of the deadline runs out; under load that moment grows. A cancellation this close to the
# deadline is the deadline.
DEADLINE_SLACK_S = 0.25


def _ended_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """A handler cancelled from outside: by its deadline or by the client going away."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= DEADLINE_SLACK_S:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


# gRPC sends the message in a trailer, percent-encoded (up to 3 bytes per UTF-8 byte), and clients drop
# trailers over 8-16 KiB: a message echoing a huge value would reach the client as RESOURCE_EXHAUSTED.
MAX_MESSAGE_BYTES = 1024


def _capped(message: str) -> str:
    data = message.encode()
    if len(data) <= MAX_MESSAGE_BYTES:
        return message
    return f"{data[:MAX_MESSAGE_BYTES].decode(errors='ignore')}... (cut from {len(data)} bytes)"


def describe(err: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message of an exception; an unexpected one is logged, never shown."""
    if isinstance(err, ServiceError):
        return err.code, _capped(str(err))
    log.error("%s failed", method, exc_info=err)
    return grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log"


def _settings(servicer: Any) -> Any:
    """The Settings of the server a servicer serves: its own, or its native servicer's (v2, Admin)."""
    return getattr(servicer, "settings", None) or servicer.native.settings


async def _write(context: grpc.aio.ServicerContext, reply: Any, max_bytes: int) -> None:
    """Send one reply. grpc refuses one over max_send_message_bytes itself (the client gets RESOURCE_EXHAUSTED from
    it, the write raises here): that is counted and logged as RESOURCE_EXHAUSTED, not as an internal error."""
    try:
        await context.write(reply)
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except Exception:
        if (size := reply.ByteSize()) <= max_bytes:
            # grpc fails a send it accepted only when the call is over underneath it: the deadline passed,
            # the client went away or the server stopped while the write waited on a client that stopped
            # reading. The call ended from outside, as a cancellation does, not with an internal error.
            raise asyncio.CancelledError from None
        raise ResourceExhausted(f"a reply of {size} bytes is over max_send_message_bytes = {max_bytes}") from None


def budget_error(err: Exception, budget: asyncio.Timeout, budget_s: float | None) -> Exception:
    """The budget's TimeoutError is OverBudget; any other exception is itself (None: no budget, none expires)."""
    return OverBudget(budget_s) if isinstance(err, TimeoutError) and budget.expired() else err


class _Ending:
    """Around one call: its time budget, and how it ended, counted once by its final code.

    An exception becomes the call's status (ServiceError: its code and message; anything else:
    INTERNAL, the traceback going to the log only). The status is set, not raised with
    context.abort: grpc keeps abort's AbortError in a reference cycle with the call's frames, holding
    the request (up to max_receive_message_bytes) until Python's next full garbage collection, which
    under a stream of refused large requests comes late. Cancellation and aborts pass through.
    """

    def __init__(self, name: str, context: grpc.aio.ServicerContext, budget_s: float | None) -> None:
        self.name, self.context, self.budget_s = name, context, budget_s
        self.t0 = time.perf_counter()
        self.deadline = asyncio.timeout(budget_s)

    def __enter__(self) -> _Ending:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: object) -> bool:
        seconds = time.perf_counter() - self.t0
        if err is None:
            metrics.observe_request(self.name, "OK", seconds)
            return False
        if isinstance(err, asyncio.CancelledError):
            metrics.observe_request(self.name, _ended_code(self.context).name, seconds)
            return False
        if isinstance(err, grpc.aio.AbortError) or not isinstance(err, Exception):
            return False
        code, message = describe(budget_error(err, self.deadline, self.budget_s), self.name)
        metrics.observe_request(self.name, code.name, seconds)
        self.context.set_code(code)
        self.context.set_details(message)
        return True


def rpc(method: Callable[..., Any] | None = None, *, budget: bool = True) -> Callable[..., Any]:
    """Wrap a servicer method (coroutine or async generator): a time budget, exceptions to status codes, counts.

    A call still running after the server's max_request_s ends with DEADLINE_EXCEEDED (OverBudget);
    being cancelled where it waits, a stream leaves its slot as it does when the client goes away.
    `@rpc(budget=False)`: a session that carries many requests (v2 ModelStreamInfer) is not one
    request; it budgets each of them itself.
    """
    if method is None:
        return functools.partial(rpc, budget=budget)
    name = method.__name__

    if inspect.isasyncgenfunction(method):
        # Sent with context.write inside the budget rather than yielded: time spent sending counts
        # too (a yielding generator waits outside any timeout of its own while grpc sends).
        @functools.wraps(method)
        async def stream(self: Any, request: Any, context: grpc.aio.ServicerContext) -> None:
            settings = _settings(self)
            ending = _Ending(name, context, settings.max_request_s if budget else None)
            replies = method(self, request, context)
            try:
                with ending:
                    async with ending.deadline:
                        async for item in replies:
                            await _write(context, item, settings.max_send_message_bytes)
            finally:
                await replies.aclose()  # cancelled while writing: the generator's own cleanup runs now
        return stream

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        ending = _Ending(name, context, _settings(self).max_request_s if budget else None)
        with ending:
            async with ending.deadline:
                return await method(self, request, context)
        return None
    return unary


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
