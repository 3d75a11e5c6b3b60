"""The HTTP edge: one request's time budget, its count, and exceptions as JSON errors with the mapped HTTP status.

The exceptions and their messages are the gRPC edge's (service.api.edge.describe); the status comes from
service.errors.HTTP_STATUS, the table beside the gRPC codes. A stream's reply is text/event-stream: one event per
message the servicer yields, an error after the first byte as an `error` event.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from service import metrics
from service.api.edge import budget_error, describe
from service.errors import HTTP_STATUS

PROTOCOL = "http"
RETRY_AFTER_S = "1"  # over capacity: streams free their slots within moments


def error_body(code: grpc.StatusCode, message: str, field: str | None, v2: bool) -> dict:
    """The Open Inference Protocol's {"error": message}, or OpenAI's error object (which the native routes share)."""
    if v2:
        return {"error": message}
    return {"error": {"message": message, "type": code.name.lower(), "param": field, "code": code.name}}


def error_response(code: grpc.StatusCode, message: str, field: str | None = None, v2: bool = False) -> JSONResponse:
    headers = {}
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        headers["Retry-After"] = RETRY_AFTER_S
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(code, message, field, v2), HTTP_STATUS[code], headers)


class Call:
    """One request: its budget (max_request_s, shared by the handler and the stream it returns) and its one count."""

    def __init__(self, method: str, budget_s: float, v2: bool = False) -> None:
        self.method, self.budget_s, self.v2 = method, budget_s, v2
        self.t0 = time.perf_counter()
        self.deadline = asyncio.get_running_loop().time() + budget_s
        self.counted = False

    def budget(self) -> asyncio.Timeout:
        return asyncio.timeout_at(self.deadline)

    def end(self, code: str) -> None:
        if not self.counted:
            self.counted = True
            metrics.observe_request(self.method, code, time.perf_counter() - self.t0, PROTOCOL)

    def failure(self, err: Exception, budget: asyncio.Timeout | None = None) -> tuple[grpc.StatusCode, str, str | None]:
        """The code, message and field of an exception, counted."""
        if budget is not None:
            err = budget_error(err, budget, self.budget_s)
        code, message = describe(err, self.method)
        self.end(code.name)
        return code, message, getattr(err, "field", None)

    def refuse(self, err: Exception) -> JSONResponse:
        """The error response to a request refused before any work (its body unreadable, not JSON, a bad field)."""
        return error_response(*self.failure(err), v2=self.v2)

    async def unary(self, work: Callable[[], Awaitable[Response]], watch: Receive | None = None) -> Response:
        """Run work() within the budget: its response, or the JSON error it raised.

        watch: the request's receive, its body already read: work that holds engine capacity (a whole generation)
        is cancelled when the client goes away, freeing its slot at the next step as a stream's does.
        """
        budget = self.budget()
        try:
            async with budget:
                response = await (work() if watch is None else _unless_gone(work(), watch))
            if response is None:
                self.end(grpc.StatusCode.CANCELLED.name)
                return Response(status_code=HTTP_STATUS[grpc.StatusCode.CANCELLED])  # sent to no one
        except asyncio.CancelledError:
            self.end(grpc.StatusCode.CANCELLED.name)
            raise
        except Exception as err:
            return error_response(*self.failure(err, budget), v2=self.v2)
        self.end("OK")
        return response

    async def stream(self, replies: AsyncIterator[Any], render: Callable[[Any], bytes], done: bytes = b"",
                     error_event: str | None = "error") -> Response:
        """Server-sent events, one per reply. Everything until the first reply (validation, capacity, the queue)
        answers with its HTTP status; after it, an error is an event. `done` ends a stream that finished."""
        budget = self.budget()
        try:
            async with budget:
                first = await anext(replies)
        except asyncio.CancelledError:
            self.end(grpc.StatusCode.CANCELLED.name)
            await replies.aclose()
            raise
        except Exception as err:
            await replies.aclose()
            return error_response(*self.failure(err, budget), v2=self.v2)
        return EventStream(self._events(first, replies, render, done, error_event), replies.aclose, self)

    async def _events(self, first: Any, replies: AsyncIterator[Any], render: Callable[[Any], bytes], done: bytes,
                      error_event: str | None) -> AsyncGenerator[bytes, None]:
        budget = self.budget()
        try:
            async with budget:
                yield render(first)
                async for reply in replies:
                    yield render(reply)
        except asyncio.CancelledError:
            self.end(grpc.StatusCode.CANCELLED.name)
            raise
        except Exception as err:
            code, message, field = self.failure(err, budget)
            yield event(error_body(code, message, field, False), error_event)
            return
        self.end("OK")
        if done:
            yield done


async def _unless_gone(work: Awaitable[Response], receive: Receive) -> Response | None:
    """work's result, or None once the client disconnected first (work is cancelled)."""
    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    task, watcher = asyncio.ensure_future(work), asyncio.ensure_future(gone())
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()  # its own cleanup (a stream's slot) runs before this returns or raises
            await asyncio.wait((task,))
    return None if task.cancelled() else task.result()


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # made once: json.dumps with options makes one per call


def event(data: object, name: str | None = None) -> bytes:
    """One server-sent event; JSON has no raw newline, so the data is one line."""
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {_COMPACT.encode(data)}\n\n".encode()


class EventStream(StreamingResponse):
    """text/event-stream whose source is closed however the response ends: finished, failed, or the client gone
    (Starlette cancels the sending task on http.disconnect), even before the first byte was sent. Closing a
    Generate reply frees its stream's slot at the next step."""

    def __init__(self, events: AsyncGenerator[bytes, None], close: Callable[[], Awaitable[None]], call: Call) -> None:
        # X-Accel-Buffering: nginx passes each event on as it comes, whatever its proxy_buffering says.
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.events, self.close, self.call = events, close, call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.call.end(grpc.StatusCode.CANCELLED.name)  # no-op unless the stream ended without a count
            await self.events.aclose()  # here, not whenever the garbage collector finds it
            await self.close()

