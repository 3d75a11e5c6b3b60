"""Why protobuf could not parse a request, down to the field, so that the refusal can name it.

protobuf's DecodeError says only "String field had bad UTF-8" or "Wire format was corrupt"; this walks
the wire format (https://protobuf.dev/programming-guides/encoding/) to find the string field at fault.
"""

from __future__ import annotations

from collections import Counter

from google.protobuf.descriptor import Descriptor, FieldDescriptor

VARINT, I64, LEN, I32 = 0, 1, 2, 5


def _varint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while shift < 64:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        n, i, shift = n | (b & 0x7F) << shift, i + 1, shift + 7
        if not b & 0x80:
            return n, i
    raise ValueError("varint too long")


def bad_utf8_field(data: bytes, message: Descriptor) -> str | None:
    """The path (`prompt`, `stop[1]`, `inputs[0].name`) of the first string field that is not UTF-8, or None
    when there is none or the wire format breaks before one is found."""
    seen: Counter[int] = Counter()
    i = 0
    try:
        while i < len(data):
            key, i = _varint(data, i)
            number, wire_type = key >> 3, key & 7
            if wire_type == VARINT:
                _, i = _varint(data, i)
                continue
            if wire_type in (I64, I32):
                i += 8 if wire_type == I64 else 4
                continue
            if wire_type != LEN:
                return None
            n, i = _varint(data, i)
            chunk, i = data[i:i + n], i + n
            field = message.fields_by_number.get(number)
            if field is None:
                continue
            path = field.name
            if field.is_repeated:
                path, seen[number] = f"{path}[{seen[number]}]", seen[number] + 1
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    chunk.decode()
                except UnicodeDecodeError:
                    return path
            elif field.type == FieldDescriptor.TYPE_MESSAGE and (inner := bad_utf8_field(chunk, field.message_type)):
                return f"{path}.{inner}"
    except ValueError:
        return None
    return None


def why_undecodable(data: bytes, message: Descriptor | None, err: Exception) -> str:
    """The client-facing reason a request could not be parsed, naming the field when one is at fault."""
    if message is not None and (path := bad_utf8_field(data, message)):
        return f"{path}: not valid UTF-8 (protobuf string fields must be UTF-8; send binary data as bytes)"
    reason = str(err).rpartition(": ")[2] or "cannot be parsed"
    kind = message.full_name if message is not None else "request"
    return f"request: not a valid {kind} message ({reason}, {len(data)} bytes)"
