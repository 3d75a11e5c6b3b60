"""Command-line client: python -m service.client {generate, classify, models} (see --help of each)."""

from __future__ import annotations

import argparse
import json
import sys

import grpc

from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc


def _generate(stub: pb_grpc.InferenceStub, a: argparse.Namespace) -> None:
    req = pb.GenerateRequest(model=a.model, version=a.version, prompt=a.prompt, max_tokens=a.max_tokens,
                             temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, stop=a.stop,
                             flush_chars=a.flush_chars, flush_ms=a.flush_ms)
    if a.seed is not None:
        req.seed = a.seed
    sys.stdout.write(a.prompt)
    for reply in stub.Generate(req, timeout=a.timeout):
        sys.stdout.write(reply.text)
        sys.stdout.flush()
        if reply.HasField("finished"):
            f = reply.finished
            print()
            print(f"[{pb.FinishReason.Name(f.finish_reason)}] {f.usage.generated_chars} chars, "
                  f"first after {f.usage.time_to_first_char_s * 1000:.1f} ms, total {f.usage.total_time_s * 1000:.1f} ms "
                  f"(version {f.version})", file=sys.stderr)


def _classify(stub: pb_grpc.InferenceStub, a: argparse.Namespace) -> None:
    reply = stub.Classify(pb.ClassifyRequest(model=a.model, version=a.version, texts=a.texts), timeout=a.timeout)
    for text, r in zip(a.texts, reply.results, strict=True):
        probs = " ".join(f"{label}={p:.3f}" for label, p in zip(r.labels, r.probabilities, strict=True))
        print(f"{r.label}\t{probs}\t{text}")


def _models(stub: pb_grpc.InferenceStub, a: argparse.Namespace) -> None:
    from google.protobuf.json_format import MessageToDict

    if a.name:
        infos = [stub.GetModel(pb.GetModelRequest(name=a.name, version=a.version), timeout=a.timeout)]
    else:
        infos = stub.ListModels(pb.ListModelsRequest(), timeout=a.timeout).models
    for info in infos:
        print(json.dumps(MessageToDict(info, always_print_fields_with_no_presence=True)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m service.client", description=__doc__)
    p.add_argument("--target", default="localhost:50051", help="server address")
    p.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="stream text from a char LM, printed as it arrives")
    g.add_argument("prompt")
    g.add_argument("--model", required=True)
    g.add_argument("--version", type=int, default=0, help="0 = latest")
    g.add_argument("-n", "--max-tokens", type=int, default=300)
    g.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
    g.add_argument("--flush-chars", type=int, default=0, help="0 = server default")
    g.add_argument("--flush-ms", type=int, default=0, help="0 = server default")
    c = sub.add_parser("classify", help="label one or more texts")
    c.add_argument("texts", nargs="+")
    c.add_argument("--model", required=True)
    c.add_argument("--version", type=int, default=0)
    m = sub.add_parser("models", help="list loaded models (or describe one) as JSON lines")
    m.add_argument("name", nargs="?")
    m.add_argument("--version", type=int, default=0)
    a = p.parse_args(argv)
    with grpc.insecure_channel(a.target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        try:
            {"generate": _generate, "classify": _classify, "models": _models}[a.cmd](stub, a)
        except grpc.RpcError as err:
            sys.exit(f"error: {err.code().name}: {err.details()}")
        except KeyboardInterrupt:
            sys.exit(130)


if __name__ == "__main__":
    main()
