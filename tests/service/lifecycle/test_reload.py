"""Hot reload: versions added, replaced and removed under load, with no failed request and no stream moved."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.data import ROOT
from tests.support.harness import Running, generate, patched_run, pb, pb_grpc, servers, slowed

pytestmark = pytest.mark.slow


@pytest.fixture
def repo(model_repo, tmp_path):
    """A private repository (the test changes it): tiny-lstm version 1 and the classifier."""
    root = tmp_path / "models"
    shutil.copytree(model_repo / "tiny-lstm" / "1", root / "lm" / "1")
    shutil.copytree(model_repo / "tiny-sentiment" / "1", root / "clf" / "1")
    return root


@pytest.fixture
def running(repo):
    with servers(repo) as start:
        yield start


def _add(model_repo, repo, source: str, version: int) -> None:
    """Put a complete version in place at once (a rename), as docs/serving.md tells operators to."""
    staging = repo.parent / f"staging-{version}"
    shutil.copytree(model_repo / source / "1", staging)
    staging.rename(repo / "lm" / str(version))


def _reload(server: Running) -> pb.ReloadModelsResponse:
    return pb_grpc.AdminStub(server.channel).ReloadModels(pb.ReloadModelsRequest(), timeout=60)


def _refs(refs) -> list[tuple[str, int]]:
    return [(r.name, r.version) for r in refs]


def _failed(report: pb.ReloadModelsResponse) -> dict[str, str]:
    return {f.path: f.reason for f in report.failed}


SEEDED = {"model": "lm", "prompt": "ROMEO:", "max_tokens": 300, "seed": 7, "temperature": 1.0, "flush_chars": 1}


def test_a_new_version_serves_new_requests_while_running_streams_finish_on_theirs(model_repo, repo, running):
    server = running()
    alone = generate(server.stub, **SEEDED)[0]
    with patched_run(server, "lm", slowed(0.005)):
        call = server.stub.Generate(pb.GenerateRequest(**SEEDED), timeout=60)
        first = next(call)
        _add(model_repo, repo, "tiny-gru", 2)
        report = _reload(server)
        assert _refs(report.loaded) == [("lm", 2)] and not report.unloaded and not report.failed
        assert _refs(report.serving) == [("clf", 1), ("lm", 1), ("lm", 2)]
        assert generate(server.stub, model="lm", prompt="A", max_tokens=5)[1][-1].finished.version == 2
        rest = list(call)
    assert first.text + "".join(r.text for r in rest) == alone
    assert rest[-1].finished.version == 1
    assert server.metric("rnnserve_model_info", model="lm", version="2", kind="char_lm", cell="gru") == 1


def test_a_removed_version_finishes_its_streams_then_is_gone(repo, running):
    server = running()
    alone = generate(server.stub, **SEEDED)[0]
    shutil.copytree(repo / "lm" / "1", repo / "lm" / "2")
    assert _refs(_reload(server).loaded) == [("lm", 2)]
    with patched_run(server, "lm", slowed(0.005)):  # version 2, the latest
        call = server.stub.Generate(pb.GenerateRequest(**SEEDED), timeout=60)
        first = next(call)
        engine = server.server.host.engine(server.server.host.repo.get("lm", 2))
        shutil.rmtree(repo / "lm" / "2")
        report = _reload(server)
        assert _refs(report.unloaded) == [("lm", 2)] and _refs(report.serving) == [("clf", 1), ("lm", 1)]
        with pytest.raises(grpc.RpcError) as err:
            generate(server.stub, **{**SEEDED, "version": 2})
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert generate(server.stub, model="lm", prompt="A", max_tokens=3)[1][-1].finished.version == 1
        assert engine.thread.is_alive()  # still decoding the stream that started on it
        rest = list(call)
    assert first.text + "".join(r.text for r in rest) == alone and rest[-1].finished.version == 2
    assert server.wait_for(lambda: not engine.thread.is_alive())  # closed once its last stream ended
    assert server.metric("rnnserve_model_info", model="lm", version="2", kind="char_lm", cell="lstm") == 0


def test_a_broken_version_is_refused_and_what_it_would_replace_keeps_serving(model_repo, repo, running):
    server = running()
    broken = repo / "lm" / "2"
    shutil.copytree(repo / "lm" / "1", broken)
    (broken / "model.onnx").write_bytes((broken / "model.onnx").read_bytes()[:1000])  # a truncated copy
    refused = server.metric("rnnserve_model_reloads_total", result="failed")
    report = _reload(server)
    assert not report.loaded and "model.onnx" in _failed(report)["lm/2"]
    assert _refs(report.serving) == [("clf", 1), ("lm", 1)]
    tried = server.metric("rnnserve_model_reloads_total", result="failed")
    assert _failed(_reload(server)) == _failed(report)  # still refused, and not tried again: the files are the same
    assert server.metric("rnnserve_model_reloads_total", result="failed") == tried == refused + 1
    assert generate(server.stub, model="lm", prompt="A", max_tokens=3)[1][-1].finished.version == 1

    shutil.rmtree(broken)
    _add(model_repo, repo, "tiny-lstm", 2)  # the operator fixes it
    report = _reload(server)
    assert _refs(report.loaded) == [("lm", 2)] and not report.failed


def _traced_cell(server: Running) -> str:
    request = pb.TraceRequest(model="lm", text="ROMEO:", layers=[0], units=[0])
    return next(iter(server.stub.Trace(request, timeout=60))).header.cell


def test_a_version_rewritten_in_place_is_replaced(model_repo, repo, running):
    server = running()
    assert _traced_cell(server) == "lstm"
    for f in ("model.onnx", "tokenizer.json", "meta.json"):
        shutil.copy(model_repo / "tiny-gru" / "1" / f, repo / "lm" / "1" / f)
    report = _reload(server)
    assert _refs(report.loaded) == _refs(report.unloaded) == [("lm", 1)]
    assert server.server.host.repo.get("lm").meta.cell == "gru"
    assert _traced_cell(server) == "gru"  # Trace reads the new copy too
    assert not _reload(server).loaded  # nothing changed since


def test_polling_picks_up_changes_and_health_follows(model_repo, repo, running):
    server = running(poll_s=0.1)
    health = health_pb2_grpc.HealthStub(server.channel)

    def status(name: str) -> int:
        return health.Check(health_pb2.HealthCheckRequest(service=f"rnnserve.v1.Inference/{name}"), timeout=10).status

    staging = repo.parent / "staging"
    shutil.copytree(model_repo / "tiny-gru" / "1", staging / "1")
    staging.rename(repo / "gru")
    assert server.wait_for(lambda: "gru" in server.server.host.repo.models, timeout=30)
    assert status("gru") == health_pb2.HealthCheckResponse.SERVING
    assert len(generate(server.stub, model="gru", prompt="A", max_tokens=4)[0]) == 4
    shutil.rmtree(repo / "gru")
    assert server.wait_for(lambda: "gru" not in server.server.host.repo.models, timeout=30)
    assert server.wait_for(lambda: status("gru") == health_pb2.HealthCheckResponse.NOT_SERVING)


def test_reloads_under_load_fail_no_request(model_repo, repo, running):
    """Clients stream and classify without pause while versions come and go; every request succeeds."""
    server = running()
    stop, failures, done = threading.Event(), [], {"Generate": 0, "Classify": 0}

    def stream_forever(seed: int) -> None:
        while not stop.is_set():
            try:
                text, replies = generate(server.stub, model="lm", prompt="A", max_tokens=40, seed=seed)
                assert len(text) == 40 and replies[-1].finished.finish_reason == pb.FINISH_REASON_LENGTH
                done["Generate"] += 1
            except (grpc.RpcError, AssertionError) as err:
                failures.append(err)

    def classify_forever() -> None:
        while not stop.is_set():
            try:
                server.stub.Classify(pb.ClassifyRequest(model="clf", texts=["a fine film"]), timeout=30)
                done["Classify"] += 1
            except grpc.RpcError as err:
                failures.append(err)

    workers = [threading.Thread(target=stream_forever, args=(i,)) for i in range(6)]
    workers.append(threading.Thread(target=classify_forever))
    for w in workers:
        w.start()
    try:
        for version in (2, 3, 4):
            _add(model_repo, repo, "tiny-gru" if version % 2 else "tiny-lstm", version)
            assert _refs(_reload(server).loaded) == [("lm", version)]
            time.sleep(0.3)
            shutil.rmtree(repo / "lm" / str(version - 1))
            assert _refs(_reload(server).unloaded) == [("lm", version - 1)]
            time.sleep(0.3)
        clf = repo / "clf" / "1"
        (clf / "meta.json").touch()  # the classifier is replaced in place under load too
        assert _refs(_reload(server).loaded) == [("clf", 1)]
        time.sleep(0.3)
    finally:
        stop.set()
        for w in workers:
            w.join(60)
    assert not failures, failures[:3]
    assert done["Generate"] > 0 and done["Classify"] > 0
    assert _refs(_reload(server).serving) == [("clf", 1), ("lm", 4)]
    assert server.wait_for(lambda: not server.server.reloader.retiring)  # every retired engine closed


@pytest.mark.process
def test_the_client_cli_reloads_and_prints_what_changed(model_repo, repo, running):
    server = running()
    _add(model_repo, repo, "tiny-gru", 2)
    r = subprocess.run([sys.executable, "-m", "service.client", "--target", f"localhost:{server.port}", "reload"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    reply = json.loads(r.stdout)
    assert reply["loaded"] == [{"name": "lm", "version": 2}] and reply["unloaded"] == [] and reply["failed"] == []
    assert {"name": "lm", "version": 1} in reply["serving"]


def test_a_version_refused_at_start_is_reported_but_not_tried_again_until_it_changes(model_repo, repo, running, caplog):
    broken = repo / "lm" / "2"
    shutil.copytree(repo / "lm" / "1", broken)
    (broken / "tokenizer.json").write_text("{")
    (repo / "bad name").mkdir()
    server = running()
    refused = server.metric("rnnserve_model_reloads_total", result="failed")
    caplog.clear()  # the start-up load logged both
    with caplog.at_level(logging.ERROR, logger="rnnserve"):
        report = _reload(server)
    assert set(_failed(report)) == {"lm/2", "bad name"}
    assert server.metric("rnnserve_model_reloads_total", result="failed") == refused  # nothing was tried again
    assert not [r for r in caplog.records if "skipping" in r.getMessage()]  # and nothing is news
    shutil.copy(repo / "lm" / "1" / "tokenizer.json", broken / "tokenizer.json")
    assert _refs(_reload(server).loaded) == [("lm", 2)]
