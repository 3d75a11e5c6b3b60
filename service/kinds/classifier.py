"""The classifier kind: one graph (tokens + lengths -> logits over labels), served by dynamic batching.

Classify returns each text's label and probabilities (native and Open Inference Protocol).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from service.api import v2_params
from service.api.params import classify_rows
from service.api.v2_params import FINAL, Tensor, add_output, pack_bytes, set_params
from service.artifact import MODEL_FILE, Meta
from service.artifact.tokenizer import Tokenizer
from service.engine.classify_batcher import Batcher
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.kinds.base import Kind, Served
from service.models.model import Model
from service.models.runners import ClassifierRunner, load_session
from service.settings import Settings


class Classifier(Kind[Batcher]):
    name = "classifier"
    v2_decoupled = False

    def __init__(self) -> None:
        self.rpcs = {"Classify": self.classify}

    def load(self, path: Path, meta: Meta, tokenizer: Tokenizer, intra_op_threads: int,
             inter_op_threads: int) -> ClassifierRunner:
        return ClassifierRunner(load_session(path, MODEL_FILE, meta, intra_op_threads, inter_op_threads), meta, tokenizer)

    def engine(self, model: Model, settings: Settings, loop: asyncio.AbstractEventLoop) -> Batcher:
        return Batcher(model.name, model.version, model.runner, settings.classify_max_batch,
                       settings.classify_max_delay_ms, settings.classify_max_queue, settings.classify_max_batch_tokens)

    async def classify(self, served: Served[Batcher], request: pb.ClassifyRequest) -> pb.ClassifyResponse:
        model = served.model
        probs = await served.engine.classify(classify_rows(request, model.tokenizer, served.settings))
        labels = model.meta.labels
        return pb.ClassifyResponse(version=model.version, results=[
            pb.Classification(label=labels[int(p.argmax())], probabilities=p.tolist(), labels=labels) for p in probs])

    def v2_signature(self, model: Model) -> tuple[list[Tensor], list[Tensor]]:
        outputs = [Tensor("label", "BYTES", (-1,)), Tensor("probabilities", "FP32", (-1, len(model.meta.labels)))]
        return [Tensor("text", "BYTES", (-1,))], outputs

    def v2_parameters(self, model: Model) -> dict[str, str]:
        return {"labels": json.dumps(model.meta.labels)}

    async def v2_infer(self, served: Served[Batcher], request: v2.ModelInferRequest,
                       stream: bool) -> AsyncIterator[v2.ModelInferResponse]:
        model = served.model
        inputs, outputs = self.v2_signature(model)
        wanted = v2_params.requested_outputs(request, model.name, outputs)
        reply = v2_params.reply_to(request, model.name, model.version)
        native = v2_params.classify_request(request, model.name, inputs[0])
        probs = await served.engine.classify(classify_rows(native, model.tokenizer, served.settings))  # (N, C)
        labels = [model.meta.labels[int(i)].encode() for i in probs.argmax(axis=1)]
        results = {"label": ((len(labels),), pack_bytes(labels)),
                   "probabilities": (probs.shape, np.ascontiguousarray(probs, dtype="<f4").tobytes())}
        for spec in wanted:
            add_output(reply, spec, *results[spec.name])
        if stream:
            set_params(reply.parameters, {FINAL: True})
        yield reply
