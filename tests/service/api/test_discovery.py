"""ListModels / GetModel, the standard health service (per model too) and server reflection."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.harness import pb


def test_list_and_get_models(server):
    infos = {m.name: m for m in server.stub.ListModels(pb.ListModelsRequest(), timeout=30).models}
    assert set(infos) == {"tiny-lstm", "tiny-gru", "tiny-sentiment", "tiny-translator", "tiny-captioner"}
    lstm, gru, clf, tr = infos["tiny-lstm"], infos["tiny-gru"], infos["tiny-sentiment"], infos["tiny-translator"]
    assert (lstm.kind, lstm.cell, lstm.version, lstm.latest, lstm.tokenizer_level) == ("char_lm", "lstm", 1, True, "char")
    assert gru.cell == "gru" and not gru.labels
    assert lstm.sizes["n_layer"] == 2 and lstm.sizes["hidden_size"] == 32 and lstm.sizes["vocab_size"] == lstm.vocab_size
    assert "val_loss" in lstm.evaluation and "export_checks.max_abs_diff_vs_torch" in lstm.evaluation
    assert (clf.kind, list(clf.labels), clf.tokenizer_level) == ("classifier", ["negative", "positive"], "word")
    assert "val_accuracy" in clf.evaluation
    assert (tr.kind, tr.cell, tr.tokenizer_level, tr.vocab_size) == ("translator", "gru", "bpe", tr.sizes["vocab_size"])
    assert tr.sizes["src_vocab_size"] > 0 and "bleu.test.greedy" in tr.evaluation
    cap = infos["tiny-captioner"]
    assert (cap.kind, cap.cell, cap.sizes["memory_size"]) == ("captioner", "lstm", 1280)
    assert server.stub.GetModel(pb.GetModelRequest(name="tiny-gru"), timeout=30) == gru
    assert server.stub.GetModel(pb.GetModelRequest(name="tiny-gru", version=1), timeout=30) == gru


def test_health_overall_per_service_and_per_model(server):
    health = health_pb2_grpc.HealthStub(server.channel)
    for name in ("", "rnnserve.v1.Inference", "rnnserve.v1.Inference/tiny-lstm", "rnnserve.v1.Inference/tiny-sentiment"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=30)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="rnnserve.v1.Inference/nope"), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_api(server):
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    ask = [reflection_pb2.ServerReflectionRequest(list_services=""),
           reflection_pb2.ServerReflectionRequest(file_containing_symbol="rnnserve.v1.Inference")]
    listed, described = list(stub.ServerReflectionInfo(iter(ask), timeout=30))
    names = {s.name for s in listed.list_services_response.service}
    assert {"rnnserve.v1.Inference", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert described.file_descriptor_response.file_descriptor_proto  # enough for grpcurl to build requests
