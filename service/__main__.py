"""python -m service --model-dir models: serve every model of the repository until SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys

from threadpoolctl import threadpool_limits

from service.settings import Settings


async def _serve(settings: Settings) -> None:
    from service.server import create_server

    # Every garbage collection stalls all threads, the decode loop included. With the default
    # gen-0 threshold (700) a 64-stream load triggered ~100 collections in 13 s, pauses up to
    # 8-12 ms on a busy machine: over 1% of decode steps, so they set the p99 inter-character
    # latency. At 20,000 it was 6. Objects that live as long as the server are frozen (never
    # scanned again).
    gc.set_threshold(20_000, 10, 10)
    # numpy's BLAS in one thread: the server's own matrix work is a row at a time (Trace's recurrence, B = 1),
    # where OpenBLAS's worker threads cost more in synchronisation than they compute (a 1 x 384 by 384 x 1536
    # product: 1,048 us with 2 threads on a busy 2-core machine, 104 us with one). ONNX Runtime has its own.
    threadpool_limits(1, user_api="blas")
    server, _ = await create_server(settings)
    gc.freeze()
    server.handle_signals()
    await server.stopped.wait()


def main(argv: list[str] | None = None) -> None:
    try:
        settings = Settings.load(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        sys.exit(f"error: {err}")
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(settings))
    except (ValueError, OSError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
