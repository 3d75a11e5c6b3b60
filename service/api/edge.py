"""The edge: the one place that turns exceptions (and anything unexpected) into gRPC status codes, with a time budget."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from service import metrics
from service.errors import OverBudget, ResourceExhausted, ServiceError
from service.settings import Settings

log = logging.getLogger("rnnserve")


class Servicer(Protocol):
    """What rpc needs of the servicer whose methods it wraps: the server's settings (time budget, reply size)."""

    settings: Settings

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

    With idle_s (a session), the call also ends once idle_s pass without a reply sent (progress()
    is called after each): a client that stops reading is let go.
    """

    def __init__(self, name: str, context: grpc.aio.ServicerContext, budget_s: float,
                 idle_s: float | None = None) -> None:
        self.name, self.context, self.budget_s, self.idle_s = name, context, budget_s, idle_s
        self.t0 = time.perf_counter()
        self.loop = asyncio.get_running_loop()
        self.start = self.last = self.loop.time()
        self.deadline = asyncio.timeout_at(self._when())

    def _when(self) -> float:
        return self.start + self.budget_s if self.idle_s is None else min(self.start + self.budget_s,
                                                                            self.last + self.idle_s)

    def progress(self) -> None:
        """A reply went out: the idle time starts again."""
        if self.idle_s is not None:
            self.last = self.loop.time()
            self.deadline.reschedule(self._when())

    def _error(self, err: Exception) -> Exception:
        """The budget's TimeoutError as OverBudget naming the setting that ran out; any other exception as it is."""
        if not (isinstance(err, TimeoutError) and self.deadline.expired()):
            return err
        if self.idle_s is None:
            return OverBudget(self.budget_s)
        if self.last + self.idle_s < self.start + self.budget_s:
            return OverBudget(self.idle_s, "session_idle_s", "time budget for a session without a reply sent")
        return OverBudget(self.budget_s, "session_max_s", "time budget for a session")

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
        code, message = describe(self._error(err), self.name)
        metrics.observe_request(self.name, code.name, seconds)
        self.context.set_code(code)
        self.context.set_details(message)
        return True


def rpc(method: Callable[..., Any] | None = None, *, session: bool = False) -> Callable[..., Any]:
    """Wrap a servicer method (coroutine or async generator): a time budget, exceptions to status codes, counts.

    A call still running after the server's max_request_s ends with DEADLINE_EXCEEDED (OverBudget);
    being cancelled where it waits, a stream leaves its slot as it does when the client goes away.
    `@rpc(session=True)`: a session that carries many requests (v2 ModelStreamInfer) is not one
    request: it budgets each of them itself, and the whole has session_max_s, and session_idle_s
    without a reply sent.
    """
    if method is None:
        return functools.partial(rpc, session=session)
    name = method.__name__

    if inspect.isasyncgenfunction(method):
        # Sent with context.write inside the budget rather than yielded: time spent sending counts
        # too (a yielding generator waits outside any timeout of its own while grpc sends).
        @functools.wraps(method)
        async def stream(self: Servicer, request: Any, context: grpc.aio.ServicerContext) -> None:
            settings = self.settings
            ending = (_Ending(name, context, settings.session_max_s, settings.session_idle_s) if session
                      else _Ending(name, context, settings.max_request_s))
            replies = method(self, request, context)
            try:
                with ending:
                    async with ending.deadline:
                        async for item in replies:
                            await _write(context, item, settings.max_send_message_bytes)
                            ending.progress()
            finally:
                await replies.aclose()  # cancelled while writing: the generator's own cleanup runs now
        return stream

    @functools.wraps(method)
    async def unary(self: Servicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        ending = _Ending(name, context, self.settings.max_request_s)
        with ending:
            async with ending.deadline:
                return await method(self, request, context)
        return None
    return unary
