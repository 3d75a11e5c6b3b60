"""Which files the process opens: an audit hook, for tests that prove nothing outside a directory is read."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_RECORDS: list[list[str]] = []  # one list per open recording() window


def _audit(event: str, args: tuple) -> None:
    if _RECORDS and event in ("open", "os.listdir", "os.scandir") and isinstance(args[0], str | bytes | os.PathLike):
        _RECORDS[-1].append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # hooks cannot be removed: it records nothing outside a recording() window

# The interpreter's own files (stdlib, site-packages): imports, not the service reading the repository.
_RUNTIME = tuple({os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})


@contextmanager
def recording() -> Iterator[list[str]]:
    """Every path the process opens or lists (any thread) inside the block, resolved, Python's imports left out."""
    paths: list[str] = []
    _RECORDS.append(paths)
    try:
        yield paths
    finally:
        _RECORDS.remove(paths)
        kept = [os.path.realpath(p) for p in paths]
        paths[:] = [p for p in kept if not p.startswith(_RUNTIME) and not p.endswith((".py", ".pyc", ".so"))]


def outside(paths: list[str], root: Path) -> list[str]:
    real_root = root.resolve()
    return [p for p in paths if not Path(p).is_relative_to(real_root)]
