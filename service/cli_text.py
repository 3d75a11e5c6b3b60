"""Text that a command-line user gives the client: arguments and files (or stdin), checked to be UTF-8.

Python decodes argv with surrogateescape, so an argument that is not UTF-8 arrives as a str holding lone
surrogates, and protobuf fails on it much later with a UnicodeEncodeError traceback. Here it is one line
that names the argument and the byte.
"""

from __future__ import annotations

import sys


class TextError(ValueError):
    """Text that cannot be sent: the message names where it came from."""


def checked(text: str, where: str) -> str:
    """`text` itself, if it can be sent as UTF-8; else TextError naming `where` and the first bad byte."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        ch = text[err.start]
        byte = f"byte 0x{ord(ch) - 0xDC00:02x}" if 0xDC80 <= ord(ch) <= 0xDCFF else f"code point U+{ord(ch):04X}"
        raise TextError(f"{where} is not valid UTF-8 ({byte} at character {err.start + 1})") from None
    return text


def read_lines(path: str) -> list[str]:
    """The non-empty lines of a UTF-8 file, or of standard input for "-"."""
    name = "standard input" if path == "-" else path
    try:
        if path == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
    except OSError as err:
        raise TextError(f"cannot read {name}: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise TextError(f"{name}:{line}: not valid UTF-8 (byte 0x{raw[err.start]:02x})") from None
    return [line for line in text.splitlines() if line.strip()]
