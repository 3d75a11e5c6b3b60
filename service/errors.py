"""Domain exceptions and the one place that turns them (and anything unexpected) into gRPC status codes."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from service import metrics

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


def describe(err: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message of an exception; an unexpected one is logged, never shown."""
    if isinstance(err, ServiceError):
        return err.code, str(err)
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


def _mapped(err: Exception, budget: asyncio.Timeout, budget_s: float) -> Exception:
    """The budget's TimeoutError is OverBudget; any other exception is itself."""
    return OverBudget(budget_s) if isinstance(err, TimeoutError) and budget.expired() else err


def rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a servicer method (coroutine or async generator): a time budget, exceptions to status codes, counts.

    ServiceError -> its code and message; anything else -> INTERNAL with a generic message, the
    traceback going to the server log with the method name, never to the client. A call still
    running after the server's max_request_s ends with DEADLINE_EXCEEDED (OverBudget); being
    cancelled where it waits, a stream leaves its slot as it does when the client goes away.
    """
    name = method.__name__

    async def fail(context: grpc.aio.ServicerContext, err: Exception, t0: float) -> None:
        code, message = describe(err, name)
        metrics.observe_request(name, code.name, time.perf_counter() - t0)
        await context.abort(code, message)

    if inspect.isasyncgenfunction(method):
        # Sent with context.write inside the budget rather than yielded: time spent sending counts
        # too (a yielding generator waits outside any timeout of its own while grpc sends).
        @functools.wraps(method)
        async def stream(self: Any, request: Any, context: grpc.aio.ServicerContext) -> None:
            t0, settings = time.perf_counter(), _settings(self)
            budget_s, max_bytes = settings.max_request_s, settings.max_send_message_bytes
            replies = method(self, request, context)
            budget = asyncio.timeout(budget_s)
            try:
                async with budget:
                    async for item in replies:
                        await _write(context, item, max_bytes)
            except asyncio.CancelledError:
                metrics.observe_request(name, _ended_code(context).name, time.perf_counter() - t0)
                raise
            except grpc.aio.AbortError:
                raise
            except Exception as err:
                await fail(context, _mapped(err, budget, budget_s), t0)
            else:
                metrics.observe_request(name, "OK", time.perf_counter() - t0)
            finally:
                await replies.aclose()  # cancelled while writing: the generator's own cleanup runs now
        return stream

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        t0, budget_s = time.perf_counter(), _settings(self).max_request_s
        budget = asyncio.timeout(budget_s)
        try:
            async with budget:
                reply = await method(self, request, context)
        except asyncio.CancelledError:
            metrics.observe_request(name, _ended_code(context).name, time.perf_counter() - t0)
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as err:
            await fail(context, _mapped(err, budget, budget_s), t0)
        metrics.observe_request(name, "OK", time.perf_counter() - t0)
        return reply
    return unary
