"""The model repository is untrusted input.

Every broken or hostile entry is refused with one log line naming its path and the reason, the good
models beside it keep serving, request names never reach the filesystem, and nothing outside the
repository root is ever opened (an audit hook records every open of the process while it looks).
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from service.artifact import shown
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc
from service.models.repository import Repository
from tests.support.audit import outside, recording
from tests.support.harness import Running, generate, pb, settings
from tests.support.hostile_repo import CASES, GOOD, NAME_RULE, ODD_NAMES, ODD_VERSIONS, VERSION_RULE, L, build


@pytest.fixture(scope="module")
def hostile(model_repo, tmp_path_factory) -> Path:
    """The hostile repository (tests/support/hostile_repo.py) and, beside it, what must stay unread."""
    return build(model_repo, tmp_path_factory.mktemp("untrusted"))


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def loaded(hostile) -> tuple[Repository, list[str], list[str]]:
    """The hostile repository loaded once: (repository, its log lines, every path opened meanwhile)."""
    lines, logger = Lines(), logging.getLogger("rnnserve")
    logger.addHandler(lines)
    try:
        with recording() as opened:
            repo = Repository.load(hostile, intra_op_threads=1)
    finally:
        logger.removeHandler(lines)
    return repo, lines.messages, opened


def skip_lines(messages: list[str], path: Path) -> list[str]:
    return [m for m in messages if m.startswith(f"skipping {shown(path)}: ")]


@pytest.mark.parametrize("case", CASES)
def test_each_broken_artifact_is_refused_with_one_line_naming_path_and_reason(hostile, loaded, case):
    repo, messages, _ = loaded
    path = hostile / case / "1"
    assert re.search(CASES[case][2], repo.skipped[str(path)]), repo.skipped[str(path)]
    [line] = skip_lines(messages, path)
    assert re.search(CASES[case][2], line) and "\n" not in line


@pytest.mark.parametrize("entry, reason", [
    *((name, NAME_RULE) for name in ODD_NAMES),
    *((f"vers/{v}", VERSION_RULE) for v in ODD_VERSIONS),
    ("escape-name", "outside the repository"), ("escape-version/1", "outside the repository"),
    ("escape-file", "outside the repository"),
])
def test_odd_names_and_links_out_are_refused_by_the_scan(hostile, loaded, entry, reason):
    repo, messages, _ = loaded
    assert reason in repo.skipped[str(hostile / entry)]
    [line] = skip_lines(messages, hostile / entry)
    assert line.isprintable(), line  # a newline or undecodable byte in a name cannot forge or garble a log line


def test_only_the_good_models_load_and_every_other_entry_is_accounted_for(hostile, loaded):
    repo, messages, _ = loaded
    assert {name: sorted(versions) for name, versions in repo.models.items()} == GOOD
    expected = {str(hostile / case / "1") for case in CASES} | {str(hostile / n) for n in ODD_NAMES}
    expected |= {str(hostile / "vers" / v) for v in ODD_VERSIONS}
    expected |= {str(hostile / e) for e in ("escape-name", "escape-version/1", "escape-file")}
    assert set(repo.skipped) == expected  # .hidden, .src-* and README.md are passed over without a word
    assert sum(m.startswith("skipping ") for m in messages) == len(expected)


def test_loading_the_hostile_repository_opens_nothing_outside_it(hostile, loaded):
    _, _, opened = loaded
    real = hostile.resolve()
    assert str(real / "lm" / "1" / "model.onnx") in opened  # the recorder saw the reads it must judge
    assert str(real / "clf" / "1" / "tokenizer.json") in opened
    assert outside(opened, hostile) == []


HOSTILE_NAMES = ["../../etc", "..", ".", "/etc/passwd", "a/b", "", "\x00", "lm\x00", "lm/../lm", "lm/1",
                 "..\\..\\etc", "~root", "escape-name", ".src-tiny-lstm", "%2e%2e%2fetc", "a" * 10_000]
NAME_CODES = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}


def _refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


@pytest.fixture(scope="module")
def hostile_server(hostile) -> Iterator[Running]:
    running = Running(settings(hostile, max_prompt_chars=500))
    yield running
    running.stop()


def test_a_server_over_the_hostile_repository_serves_the_good_models(hostile_server):
    for name in ("lm", "alias", "gru", "vers", "link-inside"):
        text, replies = generate(hostile_server.stub, model=name, prompt="A", max_tokens=4)
        assert len(text) == 4 and replies[-1].finished.version == GOOD[name][-1]
    reply = hostile_server.stub.Classify(pb.ClassifyRequest(model="clf", texts=["a fine film"]), timeout=60)
    assert len(reply.results) == 1
    listed = hostile_server.stub.ListModels(pb.ListModelsRequest(), timeout=60).models
    assert {(m.name, m.version) for m in listed} == {(n, v) for n, vs in GOOD.items() for v in vs}


def test_hostile_model_names_are_not_found_and_never_touch_the_filesystem(hostile, hostile_server):
    stub, v2_stub = hostile_server.stub, v2_grpc.GRPCInferenceServiceStub(hostile_server.channel)
    calls = {
        "GetModel": lambda n: stub.GetModel(pb.GetModelRequest(name=n), timeout=30),
        "Generate": lambda n: generate(stub, model=n, prompt="A", max_tokens=2),
        "Classify": lambda n: stub.Classify(pb.ClassifyRequest(model=n, texts=["fine"]), timeout=30),
        "Trace": lambda n: list(stub.Trace(pb.TraceRequest(model=n, text="ab"), timeout=30)),
        "v2 ModelMetadata": lambda n: v2_stub.ModelMetadata(v2.ModelMetadataRequest(name=n), timeout=30),
        "v2 ModelInfer": lambda n: v2_stub.ModelInfer(v2.ModelInferRequest(model_name=n), timeout=30),
        "v2 ModelReady": lambda n: v2_stub.ModelReady(v2.ModelReadyRequest(name=n, version="../1"), timeout=30),
    }
    with recording() as opened:
        for method, call in calls.items():
            for name in HOSTILE_NAMES:
                err = _refused(lambda: call(name))  # noqa: B023 (called at once)
                assert err.code() in NAME_CODES, (method, name, err.code(), err.details())
                assert "Traceback" not in err.details() and len(err.details()) < 1000
    assert opened == []  # a name from a request is a dictionary key, never a path
    assert not v2_stub.ModelReady(v2.ModelReadyRequest(name="../lm"), timeout=30).ready


def test_trace_reads_model_onnx_inside_the_repository_only(hostile, hostile_server):
    with recording() as opened:
        steps = list(hostile_server.stub.Trace(pb.TraceRequest(model="link-inside", text="abc"), timeout=60))
    assert steps
    assert str(hostile.resolve() / "lm" / "1" / "model.onnx") in opened  # its link, followed inside
    assert outside(opened, hostile) == []


def test_trace_refuses_a_model_onnx_swapped_for_a_link_outside_after_load(model_repo, tmp_path):
    """The served graph was read at load; Trace reads model.onnx again, and must not follow a link planted since."""
    root, out = tmp_path / "repo", tmp_path / "outside"
    shutil.copytree(model_repo / L / "1", root / "lm" / "1")
    shutil.copytree(model_repo / L / "1", out)
    running = Running(settings(root))
    try:
        (root / "lm" / "1" / "model.onnx").unlink()
        (root / "lm" / "1" / "model.onnx").symlink_to(out / "model.onnx")
        with recording() as opened:
            err = _refused(lambda: list(running.stub.Trace(pb.TraceRequest(model="lm", text="ab"), timeout=60)))
        assert err.code() == grpc.StatusCode.INTERNAL and "Traceback" not in err.details()
        assert outside(opened, root) == []
        assert generate(running.stub, model="lm", prompt="A", max_tokens=3)[0]  # the loaded graph keeps serving
    finally:
        running.stop()
