"""Fixtures: in-process servers on port 0 over the tiny models of the session's model repository."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.harness import Running, servers


@pytest.fixture(scope="session")
def serve(model_repo) -> Iterator[Callable[..., Running]]:
    """serve(**settings) -> a running server with those settings; all are stopped at the end of the session."""
    with servers(model_repo) as start:
        yield start


@pytest.fixture(scope="session")
def server(serve) -> Running:
    """The shared server: room for 64 streams, a Classify batch window long enough to see batching."""
    return serve(max_streams=64, max_queue=16, classify_max_delay_ms=20.0, max_tokens_limit=5000, max_prompt_chars=500)


