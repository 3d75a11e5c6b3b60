"""The official openai package, unmodified, pointed at /v1: completions streamed and not, equal to Generate."""

from __future__ import annotations

import openai
import pytest

from tests.support.harness import generate, patched_run, slowed

FIELDS = {"model": "tiny-lstm", "prompt": "ROMEO:", "max_tokens": 40, "temperature": 0.8, "top_p": 0.95, "seed": 9}


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    with openai.OpenAI(base_url=f"{server.http}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def test_models_are_listed(client):
    listed = [m.id for m in client.models.list()]
    assert listed == ["tiny-captioner", "tiny-gru", "tiny-lstm", "tiny-sentiment", "tiny-translator"]
    assert client.models.retrieve("tiny-lstm").owned_by == "rnnserve"


def test_completion_equals_generate(client, server):
    text, _ = generate(server.stub, **FIELDS, stop=["\n\n"])
    c = client.completions.create(**FIELDS, stop="\n\n")
    assert c.choices[0].text == text and c.object == "text_completion" and c.model == "tiny-lstm"
    assert c.choices[0].finish_reason in ("length", "stop")
    assert c.usage.prompt_tokens == 6 and c.usage.completion_tokens >= len(text)


def test_streamed_completion_arrives_in_chunks_equal_to_generate(client, server):
    text, _ = generate(server.stub, **FIELDS)
    with patched_run(server, "tiny-lstm", slowed(0.005)):  # 200 ms for the 40 characters: several 50 ms flushes
        chunks = list(client.completions.create(**FIELDS, stream=True, stream_options={"include_usage": True},
                                                extra_body={"top_k": 0}))
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(pieces) == text and len(pieces) >= 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 40


def test_logprobs_zero_gives_each_characters_log_probability(client):
    c = client.completions.create(**FIELDS, logprobs=0)
    lp = c.choices[0].logprobs
    assert lp.tokens == list(c.choices[0].text) and len(lp.token_logprobs) == 40
    assert all(x <= 0 for x in lp.token_logprobs) and lp.text_offset == list(range(40))


def test_errors_raise_the_sdks_exceptions(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(**{**FIELDS, "temperature": -1})
    assert err.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(**FIELDS, n=2)
    assert err.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(**FIELDS, logprobs=3)
    assert err.value.body["param"] == "logprobs"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(**{**FIELDS, "model": "no-such-model"})
    with pytest.raises(openai.ConflictError):
        client.completions.create(**{**FIELDS, "model": "tiny-sentiment"})
