"""Audit events seen in a block: which files the process opens (nothing outside a directory is read), what it unpickles."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_WINDOWS: list[tuple[frozenset[str], list[tuple]]] = []  # (events, what they saw) of each open watching() block


def _audit(event: str, args: tuple) -> None:
    for events, seen in _WINDOWS:
        if event in events:
            seen.append(args)


sys.addaudithook(_audit)  # hooks cannot be removed: it records nothing outside a watching() block


@contextmanager
def watching(*events: str) -> Iterator[list[tuple]]:
    """The arguments of every audit event of these names raised in the process (any thread) inside the block."""
    window = (frozenset(events), [])
    _WINDOWS.append(window)
    try:
        yield window[1]
    finally:
        _WINDOWS.remove(window)


# The interpreter's own files (stdlib, site-packages): imports, not the service reading the repository.
_RUNTIME = tuple({os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})


@contextmanager
def recording() -> Iterator[list[str]]:
    """Every path the process opens or lists (any thread) inside the block, resolved, Python's imports left out."""
    paths: list[str] = []
    with watching("open", "os.listdir", "os.scandir") as seen:
        yield paths
    kept = [os.path.realpath(os.fsdecode(args[0])) for args in seen if isinstance(args[0], str | bytes | os.PathLike)]
    paths[:] = [p for p in kept if not p.startswith(_RUNTIME) and not p.endswith((".py", ".pyc", ".so"))]


def outside(paths: list[str], root: Path) -> list[str]:
    real_root = root.resolve()
    return [p for p in paths if not Path(p).is_relative_to(real_root)]
