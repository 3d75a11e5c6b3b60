"""A plain HTTP client for the tests (the standard library's http.client): JSON calls and server-sent events."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit


def _connection(base: str, timeout: float) -> http.client.HTTPConnection:
    url = urlsplit(base)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)


def call(base: str, method: str, path: str, body: object = None, headers: dict | None = None,
         timeout: float = 60) -> tuple[int, dict, object]:
    """One request: (status, headers with lower-case names, the JSON reply or the raw bytes when it is not JSON)."""
    conn = _connection(base, timeout)
    data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
    try:
        try:
            conn.request(method, path, data, {"content-type": "application/json", **(headers or {})})
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole body was sent (413): the answer may still be there to read
        r = conn.getresponse()
        found = {k.lower(): v for k, v in r.getheaders()}
        try:
            raw = r.read()
        except http.client.IncompleteRead as err:
            # A 413 refuses the body unread and closes: the kernel's reset can discard the reply's body after its
            # status line and headers arrived. Anything else cut short is a failure.
            if r.status != 413:
                raise
            raw = err.partial
    finally:
        conn.close()
    try:
        return r.status, found, json.loads(raw)
    except ValueError:
        return r.status, found, raw


def post(base: str, path: str, body: object, **kwargs) -> tuple[int, dict, object]:
    return call(base, "POST", path, body, **kwargs)


def get(base: str, path: str, **kwargs) -> tuple[int, dict, object]:
    return call(base, "GET", path, **kwargs)


@contextmanager
def event_stream(base: str, path: str, body: object, headers: dict | None = None,
                 timeout: float = 60) -> Iterator[tuple[http.client.HTTPResponse, Iterator[tuple[str, str]]]]:
    """POST, then the response and its server-sent events as (event name, data) in arrival order; closing the
    block closes the connection (a client that goes away)."""
    conn, r = _connection(base, timeout), None
    try:
        conn.request("POST", path, json.dumps(body).encode(), {"content-type": "application/json", **(headers or {})})
        r = conn.getresponse()

        def events() -> Iterator[tuple[str, str]]:
            name, data = "message", []
            while line := r.readline():
                line = line.decode().rstrip("\r\n")
                if not line:
                    if data:
                        yield name, "\n".join(data)
                    name, data = "message", []
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
        yield r, events()
    finally:
        if r is not None:
            r.close()  # the socket closes only once its reader is closed too
        conn.close()
