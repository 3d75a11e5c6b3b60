"""The serving state every servicer works from: the repository, one engine per loaded version, draining, settings."""

from __future__ import annotations

import asyncio

from service import kinds
from service.engine import Engine
from service.errors import Unavailable
from service.kinds import Served
from service.models.model import Model
from service.models.repository import Repository
from service.settings import Settings

Key = tuple[str, int]  # (name, version)


class ModelHost:
    """Owns what the servicers share, so that none of them reaches into another.

    The repository and the engines change together, on the event loop (install / uninstall, called
    by the reloader's swap), so a request sees a version and its engine or neither.
    """

    def __init__(self, repo: Repository, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.repo, self.settings, self.loop = repo, settings, loop
        self.draining = False  # set once at shutdown: new requests get UNAVAILABLE
        self._engines: dict[Key, Engine] = {(m.name, m.version): self._start(m) for m in repo.all()}

    def _start(self, model: Model) -> Engine:
        return kinds.get(model.kind).engine(model, self.settings, self.loop)

    def check_open(self) -> None:
        """UNAVAILABLE once the server is shutting down."""
        if self.draining:
            raise Unavailable("the server is shutting down")

    def serve(self, name: str, version: int = 0) -> Served:
        """The named version (0: the latest) with its kind and engine; UNAVAILABLE while draining, else NOT_FOUND."""
        self.check_open()
        model = self.repo.get(name, version)
        return Served(kinds.get(model.kind), model, self.engine(model), self.settings)

    def engine(self, model: Model) -> Engine:
        return self._engines[(model.name, model.version)]

    @property
    def n_open(self) -> int:
        """Requests running on the engines of the served versions."""
        return sum(e.n_open for e in self._engines.values())

    def install(self, model: Model) -> Engine | None:
        """Serve a version with a new engine; returns the engine of the copy it replaces, for the caller to retire."""
        key = (model.name, model.version)
        old = self._engines.get(key)
        self.repo.add(model)
        self._engines[key] = self._start(model)
        return old

    def uninstall(self, key: Key) -> Engine:
        """Stop serving a version; returns its engine, for the caller to retire."""
        self.repo.remove(*key)
        return self._engines.pop(key)

    async def close(self) -> None:
        """Close every engine (at shutdown, after the server has drained its requests)."""
        for engine in self._engines.values():
            await engine.close()
