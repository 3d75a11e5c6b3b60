"""Classify's memory budget: no model call pads past classify_max_batch_tokens, a request holds at most
max_classify_tokens, and the worst valid requests leave a replica alive under a memory limit."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.service.api.test_classify import _direct
from tests.support.data import ROOT
from tests.support.harness import pb
from tests.support.process import Process


def _texts(n: int, chars: int) -> list[str]:
    """n valid texts of about `chars` tokens each ("!" is one token), all different."""
    return [("fun " if i % 2 else "dull ") + "!" * (chars - 5 - 61 * i) for i in range(n)]


@pytest.mark.slow
def test_64_texts_of_8192_tokens_run_in_budgeted_calls_equal_to_each_text_alone(serve, model_repo):
    running = serve(max_prompt_chars=8192, max_classify_tokens=64 * 8192, classify_max_batch_tokens=16384)
    runner = running.server.host.repo.get("tiny-sentiment").runner
    calls, run_padded = [], runner._run_padded

    def spy(rows):
        calls.append((len(rows), max(map(len, rows))))
        return run_padded(rows)

    runner._run_padded = spy
    try:
        texts = _texts(64, 8192)
        reply = running.stub.Classify(pb.ClassifyRequest(model="tiny-sentiment", texts=texts), timeout=300)
    finally:
        del runner._run_padded
    assert sum(rows for rows, _ in calls) == 64
    assert all(rows * longest <= 16384 for rows, longest in calls), calls
    for text, r in zip(texts, reply.results, strict=True):  # batch-2 and batch-1 GEMMs round apart over 8k steps
        np.testing.assert_allclose(r.probabilities, _direct(model_repo / "tiny-sentiment" / "1", text), atol=1e-5)


def test_a_request_over_max_classify_tokens_is_refused_naming_the_field(serve):
    running = serve(max_classify_tokens=1000)
    with pytest.raises(grpc.RpcError) as err:
        running.stub.Classify(pb.ClassifyRequest(model="tiny-sentiment", texts=["!" * 400] * 3), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("texts: 1200 tokens in 3 texts, the limit is 1000 per request (max_classify_tokens)")


def _memory_cgroup() -> Path | None:
    """A fresh child of this process's memory cgroup (cgroups v1), or None where none can be made."""
    try:
        own = next(line.split(":", 2)[2].strip() for line in Path("/proc/self/cgroup").read_text().splitlines()
                   if line.split(":")[1] == "memory")
        group = Path("/sys/fs/cgroup/memory") / own.lstrip("/") / f"rnnserve-test-{np.random.randint(1 << 30)}"
        group.mkdir()
        return group
    except (OSError, StopIteration, IndexError):
        return None


HEADROOM = 128 << 20  # memory the server may add under load: one budgeted call of the bundled BiLSTM is ~20 MB


@pytest.fixture
def limited(tmp_path):
    """A server process over the bundled sst2-bilstm (~4.5 KB of ONNX Runtime memory per token in a call),
    moved after start-up into a memory cgroup that lets it grow by HEADROOM: over that, the kernel kills it."""
    group = _memory_cgroup()
    if group is None:
        pytest.skip("no memory cgroup can be made here")
    shutil.copytree(ROOT / "models" / "sst2-bilstm", tmp_path / "models" / "sst2-bilstm")
    p = Process(tmp_path / "models", "--max-prompt-chars", "4096", "--classify-max-batch-tokens", "4096")
    try:
        (group / "memory.limit_in_bytes").write_text(str(HEADROOM))
        (group / "cgroup.procs").write_text(str(p.proc.pid))  # charges made from now on count against the limit
        yield p
    finally:
        p.close()
        group.rmdir()


@pytest.mark.slow
@pytest.mark.process
def test_the_worst_valid_classify_leaves_the_replica_alive_under_a_memory_limit(limited):
    """16 texts of 4,096 tokens (max_classify_tokens) in one call would take ~300 MB: killed before the budget."""
    worst = pb.ClassifyRequest(model="sst2-bilstm", texts=_texts(16, 4096))
    assert len(limited.stub.Classify(worst, timeout=300).results) == 16
    many = pb.ClassifyRequest(model="sst2-bilstm", texts=_texts(16, 256))
    with ThreadPoolExecutor(16) as pool:  # 16 requests at once
        replies = list(pool.map(lambda _: limited.stub.Classify(many, timeout=300), range(16)))
    assert all(len(r.results) == 16 for r in replies)
    assert limited.proc.poll() is None
