"""A bounded stream of streams (v2 ModelStreamInfer): requests run concurrently as they arrive, a few at a time.

The next request is read only while the requests in progress leave room for one more (a count, and a byte budget
that assumes the next is as large as a message may be), and a request stays in progress until its last reply is
taken by the sender; the replies wait in a queue bounded in count and bytes. So a client that sends without reading
its replies stops being read: a session holds at most `max_bytes` of requests and REPLY_BYTES of replies, whatever
the client sends (unbounded, 2,500 requests of 1 MiB grew a server by 2.6 GB). When the session ends, every task
it started is cancelled and awaited, and what their cancellation would keep in a reference cycle is let go, so
nothing the session held outlives it.
"""

from __future__ import annotations

import asyncio
import traceback
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar


class Message(Protocol):
    def ByteSize(self) -> int: ...  # noqa: N802 (protobuf's name)


Request = TypeVar("Request", bound=Message)
Reply = TypeVar("Reply", bound=Message)

# Replies waiting for the sender, at most this many and this many bytes; beyond, the requests' tasks wait (and a
# stream's chunks merge in the engine).
REPLY_QUEUE, REPLY_BYTES = 16, 1 << 20
_DONE, _READ = object(), object()


@dataclass(frozen=True)
class Limits:
    """What one session's requests in progress may hold: max_requests of them and max_bytes (or one request, when
    max_bytes is below max_message_bytes)."""

    max_requests: int  # requests in progress (session_max_requests)
    max_bytes: int  # their serialized bytes (session_max_bytes)
    max_message_bytes: int  # the largest request grpc lets in (max_receive_message_bytes): what the next may take


class _Replies:
    """A FIFO of (item, bytes) holding at most max_items and max_bytes, or one item of any size: a reply larger
    than the budget still goes out, alone, so a session never stalls on one."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items, self.max_bytes, self.bytes = max_items, max_bytes, 0
        self.items: deque[tuple[Any, int]] = deque()
        self.added, self.taken = asyncio.Event(), asyncio.Event()

    async def put(self, item: Any, size: int = 0) -> None:
        while self.items and (len(self.items) >= self.max_items or self.bytes + size > self.max_bytes):
            self.taken.clear()
            await self.taken.wait()
        self.items.append((item, size))
        self.bytes += size
        self.added.set()

    async def get(self) -> Any:
        while not self.items:
            self.added.clear()
            await self.added.wait()
        item, size = self.items.popleft()
        self.bytes -= size
        self.taken.set()
        return item


async def run_session(requests: AsyncIterator[Request], answer: Callable[[Request], AsyncGenerator[Reply, None]],
                      limits: Limits) -> AsyncIterator[Reply]:
    """The replies of every request, as they come; answer(request) yields one request's replies (errors included).

    A failure to read the request stream ends the session with that exception.
    """
    out = _Replies(REPLY_QUEUE, REPLY_BYTES)
    ended = asyncio.Event()  # set when a request ends
    tasks: set[asyncio.Task] = set()
    started, done, reading = 0, 0, True
    n_open, open_bytes = 0, 0  # requests in progress and their bytes

    def has_room() -> bool:
        return n_open == 0 or (n_open < limits.max_requests
                               and open_bytes + limits.max_message_bytes <= limits.max_bytes)

    async def one(request: Request, size: int) -> None:
        nonlocal n_open, open_bytes
        try:
            async with aclosing(answer(request)) as replies:  # closed now, not when collected: its cleanup frees slots
                async for reply in replies:
                    await out.put(reply, reply.ByteSize())
        except asyncio.CancelledError as err:
            _let_go(err)
            raise
        except Exception as err:  # answer() makes a failed request a reply: anything else fails the session
            await out.put(err)
        else:
            await out.put(_DONE)
        finally:
            n_open, open_bytes = n_open - 1, open_bytes - size
            ended.set()

    async def read() -> None:
        nonlocal started, n_open, open_bytes
        try:
            while True:
                while not has_room():  # read no further while the requests in progress fill the session
                    ended.clear()
                    await ended.wait()
                try:
                    request = await anext(requests)
                except StopAsyncIteration:
                    break
                size = request.ByteSize()
                started, n_open, open_bytes = started + 1, n_open + 1, open_bytes + size
                task = asyncio.create_task(one(request, size))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                del request, task
        except asyncio.CancelledError as err:
            _let_go(err)
            raise
        except Exception as err:  # the request stream broke: the session fails with it
            await out.put(err)
            return
        await out.put(_READ)

    reader = asyncio.create_task(read())
    try:
        while reading or done < started:
            item = await out.get()
            if item is _READ:
                reading = False
            elif item is _DONE:
                done += 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        pending = [reader, *tasks]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)  # their cleanup (a stream's slot) runs now


def _let_go(cancelled: asyncio.CancelledError) -> None:
    """Clear the frames a cancellation passed through. asyncio keeps the CancelledError on the future that was
    awaited (an Event's, a Queue's), and the error's traceback holds the frame that awaited it, which holds the
    future: a reference cycle through every frame on the way, the request's included, that only a full garbage
    collection frees, and the server makes those rare (service/__main__.py)."""
    traceback.clear_frames(cancelled.__traceback__)
