"""JSON bodies as the proto's messages and back, in the proto's own JSON mapping (field names as in the .proto).

One definition of every field: a request body is parsed into the same message the gRPC servicer takes, so it
meets the same validation (service/api/params.py) after the same type checks protobuf applies to any request.
"""

from __future__ import annotations

import functools
import json
import re
from typing import TypeVar

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from starlette.requests import Request

from service.errors import InvalidArgument

M = TypeVar("M", bound=Message)
# json_format names the field at fault in one of these forms; the first that matches is the field.
_FIELD = (re.compile(r'no field named "([^"]+)"'), re.compile(r"^Failed to parse (\w+) field"),
          re.compile(r" at \"?\w+\.(\w+)"))


async def read_json(request: Request) -> dict:
    """The body as a JSON object; InvalidArgument otherwise."""
    try:
        doc = json.loads(await request.body())
    except (ValueError, RecursionError) as err:  # ValueError: bad JSON or bad UTF-8
        raise InvalidArgument("request", f"not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("request", f"must be a JSON object, got {type(doc).__name__}")
    return doc


def parse(doc: dict, message: type[M]) -> M:
    """The message a JSON object spells; a wrong type, an out-of-range number or an unknown field is InvalidArgument."""
    try:
        return json_format.ParseDict(doc, message())
    except json_format.ParseError as err:
        why = str(err).split("\n")[0]
        field = next((m.group(1) for p in _FIELD if (m := p.search(why))), "request")
        raise InvalidArgument(field, why) from None


def _message_to_dict(message: Message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True,
                                     unquote_int64_if_possible=True)


@functools.cache
def _empty(descriptor: Descriptor) -> tuple[tuple[str, object], ...]:
    """The JSON of a message of this type with no field set, as (name, value) pairs."""
    return tuple(_message_to_dict(message_factory.GetMessageClass(descriptor)()).items())


def _plain_string(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated


def to_json(message: Message) -> dict:
    """A reply message in the proto's JSON mapping, every field present, 64-bit integers as numbers.

    A streamed reply is mostly text alone (every Generate and Translate message but the last): such a message, whose
    only fields set are strings, is its type's empty JSON with those strings, without json_format's walk over every
    field, the one cost of a server-sent event that grows with the proto.
    """
    fields = message.ListFields()
    if not all(_plain_string(field) for field, _ in fields):
        return _message_to_dict(message)
    doc = {field.name: value for field, value in fields}  # set fields first, then the rest: json_format's order
    for name, value in _empty(message.DESCRIPTOR):
        if name not in doc:
            doc[name] = value.copy() if isinstance(value, list | dict) else value
    return doc


def pop_flag(doc: dict, key: str) -> bool:
    """A boolean field of the HTTP request that is not a proto field (e.g. `stream`), removed from the object."""
    value = doc.pop(key, False)
    if not isinstance(value, bool):
        raise InvalidArgument(key, f"must be true or false, got {value!r}")
    return value
