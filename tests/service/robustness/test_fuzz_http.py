"""Property-based fuzzing of the HTTP routes against a real server process: any body on any route gets a status
from HTTP_OK and a JSON error naming the field, never a 500 or a traceback, and the server stays up.

The gRPC fuzz (test_fuzz.py) covers every field's values; this one covers what only HTTP has: JSON of any shape,
wrong types, bytes that are not JSON, unknown routes and methods, fuzzed names in paths, bodies over the limit.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given

from tests.service.robustness.test_fuzz import DEADLINE_S, MAX_RECEIVE_BYTES, Fuzz, fuzz_settings
from tests.support import fuzz_strategies as fs
from tests.support import http_client

EXAMPLES = 150
pytestmark = [pytest.mark.slow, pytest.mark.process]  # the server as a process of its own


@pytest.fixture(scope="module")
def fuzz(model_repo):
    f = Fuzz(model_repo)
    f.assert_alive()
    yield f
    f.p.close()


HTTP_OK = {200, 400, 404, 405, 409, 413}  # 413: only for a body over max_receive_message_bytes
FIELD_FIRST = re.compile(r"[^\s:]{1,200}:")  # a message that starts with the field at fault (any JSON key)


def test_http_routes(fuzz):
    """Any body (JSON of any shape, the proto's fields with fuzzed values, bytes) on any route: a status from
    HTTP_OK (never a 500), a JSON error naming the field first, events without an internal error, no traceback."""
    @fuzz_settings(EXAMPLES)
    @given(fs.http_requests())
    def prop(case: tuple[str, str, object]) -> None:
        method, path, body = case
        status, headers, reply = http_client.call(fuzz.p.http, method, path, body, timeout=DEADLINE_S)
        assert (status == 413) == (len(body) > MAX_RECEIVE_BYTES), f"{status} for a body of {len(body)} bytes"
        assert fuzz.p.proc.poll() is None, "the server process died"
        assert status in HTTP_OK, f"{status} for {method} {path}: {str(reply)[:300]}"
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else json.dumps(reply)
        assert "Traceback" not in text and "internal error" not in text, text[:300]
        if status == 200:
            return
        assert headers["content-type"] == "application/json", headers
        if status == 413 and isinstance(reply, bytes):
            return  # the connection's reset discarded the refusal's body after its headers (see http_client.call)
        assert isinstance(reply, dict), f"{status} for {method} {path} ({len(body)} bytes sent): a JSON error " \
                                        f"that is not JSON: {reply[:300]!r}"
        error = reply["error"]
        if status != 400:
            return
        if isinstance(error, str):  # /v2: the message starts with the field path
            assert FIELD_FIRST.match(error), f"no field named first: {error[:300]}"
        else:  # /v1: the field in `param`, and first in the message
            assert error["param"] and error["message"].startswith(f"{error['param']}:"), error
    prop()
    fuzz.assert_alive()
