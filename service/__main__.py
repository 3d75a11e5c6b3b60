"""python -m service --model-dir models: serve every model of the repository until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys

from service.settings import Settings


async def _serve(settings: Settings) -> None:
    from service.server import create_server

    server, _ = await create_server(settings)
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
