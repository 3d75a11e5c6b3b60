"""A bounded stream of streams (v2 ModelStreamInfer): requests run concurrently as they arrive, a few at a time.

The next request is read only while fewer than max_pending are in progress, and a request stays in
progress until its last reply is taken by the sender. So a client that sends without reading its
replies stops being read: the session holds at most max_pending requests and REPLY_QUEUE replies,
whatever the client sends (unbounded, 2,500 requests of 1 MiB grew a server by 2.6 GB). When the
session ends, every task it started is cancelled and awaited, and what their cancellation would keep
in a reference cycle is let go, so nothing the session held outlives it.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, TypeVar

Request = TypeVar("Request")
Reply = TypeVar("Reply")

REPLY_QUEUE = 16  # replies waiting for the sender; beyond it the requests' tasks wait (and chunks merge in the engine)
_DONE, _READ = object(), object()


async def run_session(requests: AsyncIterator[Request], answer: Callable[[Request], AsyncGenerator[Reply, None]],
                      max_pending: int) -> AsyncIterator[Reply]:
    """The replies of every request, as they come; answer(request) yields one request's replies (errors included).

    A failure to read the request stream ends the session with that exception.
    """
    out: asyncio.Queue[Any] = asyncio.Queue(REPLY_QUEUE)
    slots = asyncio.Semaphore(max_pending)
    tasks: set[asyncio.Task] = set()
    started, done, reading = 0, 0, True

    async def one(request: Request) -> None:
        try:
            async with aclosing(answer(request)) as replies:  # closed now, not when collected: its cleanup frees slots
                async for reply in replies:
                    await out.put(reply)
        except asyncio.CancelledError as err:
            _let_go(err)
            raise
        except Exception as err:  # answer() makes a failed request a reply: anything else fails the session
            await out.put(err)
        else:
            await out.put(_DONE)
        finally:
            slots.release()

    async def read() -> None:
        nonlocal started
        try:
            while True:
                await slots.acquire()  # read no further while max_pending requests are in progress
                try:
                    request = await anext(requests)
                except StopAsyncIteration:
                    break
                started += 1
                task = asyncio.create_task(one(request))
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
