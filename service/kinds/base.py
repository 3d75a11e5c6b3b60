"""What a model kind is to the server (the Kind interface) and the registry that maps meta.json's kind to one."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from service import artifact
from service.api.v2_params import Tensor
from service.artifact import Meta
from service.artifact.tokenizer import Tokenizer
from service.engine import Engine
from service.errors import FailedPrecondition
from service.gen.inference import grpc_service_pb2 as v2
from service.models.model import Model, Runner
from service.settings import Settings

E = TypeVar("E", bound=Engine)


@dataclass(frozen=True)
class Served(Generic[E]):
    """One request's model version, with what its kind's handlers work with: the version's engine, the settings."""

    kind: Kind[E]
    model: Model
    engine: E
    settings: Settings


# An rnnserve.v1.Inference handler: (served, request) -> a coroutine (unary RPC) or an async generator (streaming RPC).
Handler = Callable[[Served[Any], Any], Any]


class Kind(ABC, Generic[E]):
    """A model kind: how its artifact becomes a runner, which engine runs it, which RPCs it serves and how.

    What its meta.json must say is the artifact's business (service/artifact/kinds.py), since training
    writes it too; everything the server does with the kind is here.
    """

    name: ClassVar[str]  # meta.json kind
    v2_decoupled: ClassVar[bool]  # Open Inference Protocol: may one request get several responses (a stream)?
    rpcs: Mapping[str, Handler]  # rnnserve.v1.Inference method name -> handler; any other method: FAILED_PRECONDITION

    def read_tokenizer(self, path: Path, meta: Meta) -> Any:
        """The artifact's tokenizer: tokenizer.json, as big as meta.json's vocab_size says. A kind whose artifact
        holds other tokenizer files reads them instead; ModelInfo reads `vocab_size` and `level` of what it returns."""
        tok = Tokenizer.parse(artifact.read_member(path, artifact.TOKENIZER_FILE))
        if tok.vocab_size != meta.sizes["vocab_size"]:
            raise ValueError(f"tokenizer has {tok.vocab_size} tokens, meta.json sizes.vocab_size is {meta.sizes['vocab_size']}")
        return tok

    @abstractmethod
    def load(self, path: Path, meta: Meta, tokenizer: Any, intra_op_threads: int, inter_op_threads: int) -> Runner:
        """The runner of the artifact at `path`, from the graph(s) it holds; ValueError saying what is wrong."""

    @abstractmethod
    def engine(self, model: Model, settings: Settings, loop: asyncio.AbstractEventLoop) -> E:
        """The running engine of one loaded version (the server closes it)."""

    @abstractmethod
    def v2_signature(self, model: Model) -> tuple[list[Tensor], list[Tensor]]:
        """Inputs and outputs, as the Open Inference Protocol's ModelMetadata and ModelConfig describe them."""

    @abstractmethod
    def v2_parameters(self, model: Model) -> dict[str, str]:
        """ModelConfig parameters of this kind, after kind, cell and version."""

    @abstractmethod
    def v2_infer(self, served: Served[E], request: v2.ModelInferRequest, stream: bool) -> AsyncIterator[v2.ModelInferResponse]:
        """One ModelInfer request: its responses, several only when `stream` (ModelStreamInfer) and v2_decoupled."""


_registry: dict[str, Kind[Any]] = {}


def register(kind: Kind[Any]) -> None:
    """Serve models whose meta.json says kind.name."""
    if kind.name not in artifact.KINDS:
        raise ValueError(f"kind {kind.name!r} has no meta.json rules in service/artifact/kinds.py")
    _registry[kind.name] = kind


def get(name: str) -> Kind[Any]:
    """The kind of a meta.json; ValueError (the artifact is skipped) for one this server does not serve."""
    try:
        return _registry[name]
    except KeyError:
        raise ValueError(f"meta.json kind {name!r} is not served here (kinds: {', '.join(sorted(_registry))})") from None


def served_methods() -> list[str]:
    """The rnnserve.v1.Inference methods some registered kind serves, each once, in the order kinds registered them."""
    return list(dict.fromkeys(method for kind in _registry.values() for method in kind.rpcs))


def handler(kind: Kind[Any], method: str, model_name: str) -> Handler:
    """The kind's handler of an Inference method; FAILED_PRECONDITION when models of this kind do not serve it."""
    if (found := kind.rpcs.get(method)) is None:
        serving = " or ".join(k.name for k in _registry.values() if method in k.rpcs)
        raise FailedPrecondition(f"{method} needs a {serving} model; {model_name!r} is a {kind.name}")
    return found
