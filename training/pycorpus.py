"""The code corpus: the Python standard library's own source, gathered at run time and never committed.

Karpathy, Johnson & Fei-Fei (2015) trained on the Linux kernel's C source to find cells that track
comments, strings, bracket nesting and indentation. The standard library of the Python that runs
this project is on every machine and has the same structure, so the corpus is rebuilt, not stored.
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
from pathlib import Path

CORPUS = "runs/data/python-stdlib.txt"  # where make and the recipes put it, relative to the repository root
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "encodings", "__pycache__", "lib2to3"}
SEPARATOR = "\n\n"


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The library's .py files, tests and codec tables left out, in a fixed shuffled order (by the sha1 of the
    relative path), so that any prefix, and the validation split at the end, mix the whole library."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    return sorted((p for p in root.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(root).parts[:-1])),
                  key=lambda p: hashlib.sha1(p.relative_to(root).as_posix().encode()).hexdigest())


def build(out: str | Path, max_chars: int = 4_000_000, root: Path | None = None) -> dict:
    """Concatenate ASCII-only files until max_chars; write the corpus and a manifest beside it (<out>.json)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    parts, used, size = [], [], 0
    for path in stdlib_files(root):
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.isascii() or not text.strip():  # a small, ASCII vocabulary: a few files use other scripts
            continue
        if size + len(text) > max_chars:
            continue  # too big for what is left; a smaller file may fit
        parts.append(text.rstrip("\n") + SEPARATOR)
        used.append(path.relative_to(root).as_posix())
        size += len(parts[-1])
    if not parts:
        raise ValueError(f"no Python source under {root}")
    corpus = "".join(parts)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(corpus, encoding="utf-8")
    manifest = {"source": str(root), "python": sys.version.split()[0], "files": len(used), "chars": len(corpus),
                "sha256": hashlib.sha256(corpus.encode()).hexdigest(), "first": used[0], "last": used[-1]}
    out.with_suffix(out.suffix + ".json").write_text(json.dumps({**manifest, "paths": used}, indent=1) + "\n")
    return manifest


def provide(path: Path, named: str) -> bool:
    """Build the code corpus at path if meta.json names it (`named` is CORPUS) and it is missing; whether it was built.

    A model trained on it records its path and sha256 like any data set's, but a fresh checkout has no corpus
    until make builds it; scoring such a model (the int8 quality gate) rebuilds it here instead. The same
    Python gives the same bytes; the caller checks them against the recorded sha256.
    """
    if path.exists() or Path(named) != Path(CORPUS):
        return False
    build(path)
    return True
