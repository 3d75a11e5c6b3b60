"""Fixtures: in-process servers on port 0 over the tiny models of the session's model repository."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.harness import Running, servers

CAPTIONER = "synthetic-captioner"


@pytest.fixture(scope="session")
def serve(model_repo) -> Iterator[Callable[..., Running]]:
    """serve(**settings) -> a running server with those settings; all are stopped at the end of the session."""
    with servers(model_repo) as start:
        yield start


@pytest.fixture(scope="session")
def server(serve) -> Running:
    """The shared server: room for 64 streams, a Classify batch window long enough to see batching."""
    return serve(max_streams=64, max_queue=16, classify_max_delay_ms=20.0, max_tokens_limit=5000, max_prompt_chars=500)




@pytest.fixture(scope="session")
def captioner_repo(tmp_path_factory) -> Path:
    """A model repository holding only the random-weight captioner of tests/support/captioner.py."""
    from tests.support import captioner

    repo = tmp_path_factory.mktemp("captioners")
    captioner.build(repo / CAPTIONER / "1")
    return repo


@pytest.fixture(scope="session")
def caption_server(captioner_repo) -> Iterator[Running]:
    """A server over the captioner repository: room for 64 rows, so 32 greedy captions and a beam search fit."""
    with servers(captioner_repo) as start:
        yield start(max_streams=64, max_queue=64)
