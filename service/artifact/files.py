"""An artifact's files as untrusted input: read only inside the repository, size-capped, JSON parsed strictly."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"
# A translator holds two graphs and one `tokenizers` JSON file per language instead of model.onnx and tokenizer.json.
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
SOURCE_TOKENIZER_FILE = "source.tokenizer.json"
TARGET_TOKENIZER_FILE = "target.tokenizer.json"

# The most bytes read from each file: an artifact is untrusted input and must not exhaust memory.
# meta.json is ~2.5 KiB, and ModelInfo carries its labels, description and evaluation: at 64 KiB,
# ListModels of 50 models still fits gRPC's 4 MiB message. A word tokenizer of 14k words is
# 200 KiB; protobuf caps a graph at 2 GiB.
MAX_BYTES = {META_FILE: 64 << 10, TOKENIZER_FILE: 32 << 20, MODEL_FILE: 2 << 30, ENCODER_FILE: 2 << 30,
             DECODER_FILE: 2 << 30, SOURCE_TOKENIZER_FILE: 32 << 20, TARGET_TOKENIZER_FILE: 32 << 20}
MAX_JSON_DEPTH = 32  # meta.json nests 5 levels; the service walks it recursively (ModelInfo.evaluation)
INT64 = 1 << 63  # meta.json sizes travel as int64 in ModelInfo


def shown(path: Path | str) -> str:
    """A path as one log line can carry it: a name with a newline or undecodable bytes is shown escaped."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def read_inside(path: Path, root: Path, limit: int) -> bytes:
    """The bytes of `path`, read only if it is a regular file that lies inside `root` and has at most `limit` bytes.

    Symlinks are followed only as far as they stay inside the root; the check is repeated on the
    descriptor actually opened (/proc/self/fd), so a link swapped in between cannot lead the read
    outside. O_NONBLOCK: opening a FIFO planted as model.onnx must not hang the load.
    """
    name = path.name
    real_root = Path(root).resolve()
    try:
        real = Path(path).resolve(strict=True)
    except FileNotFoundError:
        raise ValueError(f"missing {name}" + (" (a dangling symlink)" if path.is_symlink() else "")) from None
    except (OSError, RuntimeError) as err:  # a link loop, a permission denied
        raise ValueError(f"{name}: cannot resolve it ({type(err).__name__}: {err})") from None
    if not real.is_relative_to(real_root):
        raise ValueError(f"{name} resolves to {shown(real)}, outside the repository {shown(real_root)}")
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        proc = Path(f"/proc/self/fd/{fd}")
        if proc.is_symlink() and not Path(os.readlink(proc)).is_relative_to(real_root):
            raise ValueError(f"{name} changed while it was opened and now lies outside the repository")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{name} is not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{name} has {info.st_size} bytes, more than the {limit} read from it")
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ValueError(f"{name} has more than the {limit} bytes read from it")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_member(version_dir: Path, filename: str) -> bytes:
    """One file of an artifact at <root>/<name>/<version>/: nothing outside <root> is read (see read_inside)."""
    return read_inside(Path(version_dir) / filename, Path(version_dir).parent.parent, MAX_BYTES[filename])


def _finite(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"number {text[:20]} overflows a float")
    return x


def _int64(text: str) -> int:
    x = int(text)
    if not -INT64 <= x < INT64:
        raise ValueError(f"integer {text[:20]}... does not fit 64 bits")
    return x


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _check_tree(value: Any) -> None:
    """Depth at most MAX_JSON_DEPTH and every string UTF-8 encodable (a lone surrogate cannot go into a reply)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels")
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, x in items:
            if isinstance(k, str):
                k.encode("utf-8")
            if isinstance(x, str):
                x.encode("utf-8")
            elif isinstance(x, dict | list):
                stack.append((x, depth + 1))


def parse_json(data: bytes, filename: str) -> dict[str, Any]:
    """A JSON object from strict UTF-8 bytes; every way it can be malformed is a ValueError naming the file."""
    try:
        value = json.loads(data.decode("utf-8"), parse_float=_finite, parse_int=_int64, parse_constant=_refuse_constant)
        _check_tree(value)
    except UnicodeError as err:
        raise ValueError(f"{filename} is not UTF-8 text: {err}") from None
    except RecursionError:
        raise ValueError(f"{filename} nests too deeply to parse") from None
    except ValueError as err:
        raise ValueError(f"{filename} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{filename} must hold a JSON object, not {type(value).__name__}")
    return value
