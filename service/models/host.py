"""The serving state every servicer works from: the repository, one engine per loaded version, draining, settings."""

from __future__ import annotations

from collections.abc import Callable

from service.engine import Engine
from service.errors import Unavailable
from service.models.repository import Model, Repository
from service.settings import Settings

Key = tuple[str, int]  # (name, version)


class ModelHost:
    """Owns what the servicers share, so that none of them reaches into another.

    The repository and the engines change together, on the event loop (install / uninstall, called
    by the reloader's swap), so a request sees a version and its engine or neither.
    """

    def __init__(self, repo: Repository, settings: Settings, make_engine: Callable[[Model], Engine]) -> None:
        self.repo, self.settings, self.make_engine = repo, settings, make_engine
        self.draining = False  # set once at shutdown: new requests get UNAVAILABLE
        self._engines: dict[Key, Engine] = {(m.name, m.version): make_engine(m) for m in repo.all()}

    def check_open(self) -> None:
        """UNAVAILABLE once the server is shutting down."""
        if self.draining:
            raise Unavailable("the server is shutting down")

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
        self._engines[key] = self.make_engine(model)
        return old

    def uninstall(self, key: Key) -> Engine:
        """Stop serving a version; returns its engine, for the caller to retire."""
        self.repo.remove(*key)
        return self._engines.pop(key)

    async def close(self) -> None:
        """Close every engine (at shutdown, after the server has drained its requests)."""
        for engine in self._engines.values():
            await engine.close()
