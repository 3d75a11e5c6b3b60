"""Command-line client: python -m service.client {generate, translate, caption, classify, models, trace, reload}
(see --help of each)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import grpc

from service.cli_text import TextError, checked, read_lines
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc


def _generate(stub: pb_grpc.InferenceStub, a: argparse.Namespace) -> None:
    stop = [checked(text, f"--stop {i}") for i, text in enumerate(a.stop, start=1)]
    req = pb.GenerateRequest(model=a.model, version=a.version, prompt=checked(a.prompt, "the prompt"),
                             max_tokens=a.max_tokens, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, stop=stop,
                             flush_chars=a.flush_chars, flush_ms=a.flush_ms)
    if a.seed is not None:
        req.seed = a.seed
    sys.stdout.write(a.prompt)
    for reply in stub.Generate(req, **a.call):
        sys.stdout.write(reply.text)
        sys.stdout.flush()
        if reply.HasField("finished"):
            f = reply.finished
            print()
            print(f"[{pb.FinishReason.Name(f.finish_reason)}] {f.usage.generated_chars} chars, "
                  f"first after {f.usage.time_to_first_char_s * 1000:.1f} ms, total {f.usage.total_time_s * 1000:.1f} ms "
                  f"(version {f.version})", file=sys.stderr)


def _translate(stub: pb_grpc.InferenceStub, a: argparse.Namespace) -> None:
    """Print the translation as it is decoded; with --attention, write its alignment (.html, or .png with matplotlib)."""
    req = pb.TranslateRequest(model=a.model, version=a.version, text=a.text, beam_size=a.beam,
                              return_attention=bool(a.attention), flush_chars=a.flush_chars, flush_ms=a.flush_ms)
    if a.length_penalty is not None:
        req.length_penalty = a.length_penalty
    if a.max_tokens is not None:
        req.max_tokens = a.max_tokens
    finished = None
    for reply in stub.Translate(req, **a.call):
        sys.stdout.write(reply.text)
        sys.stdout.flush()
        if reply.HasField("finished"):
            finished = reply.finished
    print()
    if finished is None:
        return
    u = finished.usage
    print(f"[{pb.FinishReason.Name(finished.finish_reason)}] {u.source_tokens} -> {u.generated_tokens} tokens, "
          f"first after {u.time_to_first_token_s * 1000:.1f} ms, total {u.total_time_s * 1000:.1f} ms "
          f"(version {finished.version})", file=sys.stderr)
    if a.attention:
        _alignment(a.attention, f"{a.model} v{finished.version}: {a.text}", finished.alignment)


def _alignment(path: str, title: str, al: pb.Alignment) -> None:
    from service.interpret import alignpage

    if path.endswith(".png"):
        try:
            alignpage.write_png(Path(path), title, al.source_tokens, al.target_tokens, al.weights)
        except ImportError:
            sys.exit("error: a .png needs matplotlib (pip install matplotlib); an .html page needs nothing more")
    else:
        note = "Each row is an output token, each column a source token; the darker the cell, the more attention."
        Path(path).write_text(alignpage.render(title, al.source_tokens, al.target_tokens, al.weights, note), encoding="utf-8")
    print(f"wrote {path}: {len(al.target_tokens)} x {len(al.source_tokens)} alignment", file=sys.stderr)


def _caption(stub: pb_grpc.InferenceStub, a: argparse.Namespace) -> None:
    """One image: its caption printed as it is decoded. Several: one CaptionBatch, a line per image. With --attention,
    each image's attention pictures (IMAGE_STEM.attention.png and .html) go to --out-dir."""
    images = [_read(path) for path in a.images]
    search = {"beam_size": a.beam, "return_attention": a.attention}
    if a.max_tokens is not None:
        search["max_tokens"] = a.max_tokens
    if len(images) == 1:
        finished = None
        req = pb.CaptionRequest(model=a.model, version=a.version, image=images[0], flush_chars=1, **search)
        for reply in stub.Caption(req, **a.call):
            sys.stdout.write(reply.text)
            sys.stdout.flush()
            if reply.HasField("finished"):
                finished = reply.finished
        print()
        results = [finished] if finished is not None else []
        if finished is not None:
            u = finished.usage
            print(f"[{pb.FinishReason.Name(finished.finish_reason)}] {u.generated_tokens} tokens, first after "
                  f"{u.time_to_first_token_s * 1000:.1f} ms, total {u.total_time_s * 1000:.1f} ms (version {finished.version})",
                  file=sys.stderr)
    else:
        reply = stub.CaptionBatch(pb.CaptionBatchRequest(model=a.model, version=a.version, images=images, **search),
                                  **a.call)
        for path, c in zip(a.images, reply.captions, strict=True):
            print(f"{path}\t{c.text}")
        results = [c.finished for c in reply.captions]
    if a.attention:
        for path, data, f in zip(a.images, images, results, strict=True):
            _attention_pictures(Path(path), data, f"{a.model} v{f.version}: {Path(path).name}", f.attention, Path(a.out_dir))


def _attention_pictures(path: Path, data: bytes, title: str, at: pb.CaptionAttention, out_dir: Path) -> None:
    from service.artifact.image import decode
    from service.interpret import captionpage

    img = decode(data)  # upright, as the server saw it
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{path.stem}.attention"
    Path(f"{stem}.png").write_bytes(captionpage.png(img, at.words, at.weights, at.rows, at.cols))
    note = (f"Each panel is the image lit where the model looked when it chose the word under it ({at.rows} x {at.cols} "
            "regions, smoothed).")
    Path(f"{stem}.html").write_text(captionpage.render(title, img, at.words, at.weights, at.rows, at.cols, note),
                                         encoding="utf-8")
    print(f"wrote {stem}.png and {stem}.html: {len(at.words)} words", file=sys.stderr)


def _classify(stub: pb_grpc.InferenceStub, a: argparse.Namespace) -> None:
    """Texts from the arguments, then from --file, sent --batch-size at a time (a request carries at most 64 by default)."""
    texts = [checked(t, f"text {i}") for i, t in enumerate(a.texts, start=1)] + (read_lines(a.file) if a.file else [])
    if not texts:
        sys.exit("error: give texts to classify, or --file FILE (- for standard input)")
    for start in range(0, len(texts), a.batch_size):
        batch = texts[start : start + a.batch_size]
        reply = stub.Classify(pb.ClassifyRequest(model=a.model, version=a.version, texts=batch), **a.call)
        for text, r in zip(batch, reply.results, strict=True):
            probs = " ".join(f"{label}={p:.3f}" for label, p in zip(r.labels, r.probabilities, strict=True))
            print(f"{r.label}\t{probs}\t{text}")


def _models(stub: pb_grpc.InferenceStub, a: argparse.Namespace) -> None:
    from google.protobuf.json_format import MessageToDict

    if a.name:
        infos = [stub.GetModel(pb.GetModelRequest(name=a.name, version=a.version), **a.call)]
    else:
        infos = stub.ListModels(pb.ListModelsRequest(), **a.call).models
    for info in infos:
        d = MessageToDict(info, always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
        d["sizes"] = {k: int(v) for k, v in d["sizes"].items()}  # JSON mapping writes int64 as strings
        print(json.dumps(d))


def _reload(admin: pb_grpc.AdminStub, a: argparse.Namespace) -> None:
    from google.protobuf.json_format import MessageToDict

    reply = admin.ReloadModels(pb.ReloadModelsRequest(), **a.call)
    print(json.dumps(MessageToDict(reply, always_print_fields_with_no_presence=True, preserving_proto_field_name=True)))


def _units(specs: list[str]) -> list[tuple[int, int]]:
    """["1:42", "0:3-5"] -> [(1, 42), (0, 3), (0, 4), (0, 5)]."""
    pairs = []
    for spec in specs:
        layer, _, units = spec.partition(":")
        first, _, last = units.partition("-")
        try:
            pairs += [(int(layer), u) for u in range(int(first), int(last or first) + 1)]
        except ValueError:
            sys.exit(f"error: --unit {spec!r} must look like LAYER:UNIT or LAYER:FIRST-LAST")
    return pairs


def _trace(stub: pb_grpc.InferenceStub, a: argparse.Namespace) -> None:
    from service.interpret.cellpage import Series, render, value_range

    text = open(a.file, encoding="utf-8").read() if a.file else checked(a.text, "the text")
    if not text:
        sys.exit("error: give the text to trace, or --file")
    pairs = _units(a.unit)
    if not pairs:  # the first units of the last layer
        sizes = stub.GetModel(pb.GetModelRequest(name=a.model, version=a.version), **a.call).sizes
        pairs = [(sizes["n_layer"] - 1, u) for u in range(min(64, sizes["hidden_size"]))]
    req = pb.TraceRequest(model=a.model, version=a.version, text=text, top_k=a.top_k,
                          layers=sorted({layer for layer, _ in pairs}), units=sorted({u for _, u in pairs}))
    replies = iter(stub.Trace(req, **a.call))
    header = next(replies).header
    steps = [s for r in replies for s in r.steps]
    column = {(c.layer, c.unit): j for j, c in enumerate(header.columns)}
    quantities = sorted(header.quantities, key=lambda q: q != ("cell" if header.cell == "lstm" else "hidden"))
    series = []
    for q in quantities:
        for layer, u in pairs:
            values = [getattr(s, q)[column[layer, u]] for s in steps]
            series.append(Series(f"layer {layer} · unit {u} · {q}", values, *value_range(q, values)))
    nxt = [[(c.char, c.probability) for c in s.next] for s in steps] if a.top_k else None
    title = f"{a.model} v{header.version}: {header.cell} activations over {header.n_chars} characters"
    with open(a.out, "w", encoding="utf-8") as f:
        note = "Blue: low, red: high (white: the middle of the range). From a Trace call."
        f.write(render(title, [s.char for s in steps], series, nxt, note=note))
    print(f"wrote {a.out}: {len(series)} series over {len(steps)} characters", file=sys.stderr)


TOKEN_ENV = "RNNSERVE_CLIENT_TOKEN"


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        sys.exit(f"error: cannot read {path}: {err.strerror}")


def _token(a: argparse.Namespace) -> str | None:
    """The bearer token: the first line of --token-file, else $RNNSERVE_CLIENT_TOKEN, else none."""
    if a.token_file:
        lines = _read(a.token_file).decode("utf-8", "replace").split()
        if not lines:
            sys.exit(f"error: {a.token_file} holds no token")
        return lines[0]
    return os.environ.get(TOKEN_ENV) or None


def _channel(a: argparse.Namespace) -> grpc.Channel:
    """Plain h2c, or TLS when a CA, a client certificate or --tls is given (mutual TLS with --tls-cert/--tls-key)."""
    if bool(a.tls_cert) != bool(a.tls_key):
        sys.exit("error: --tls-cert and --tls-key go together (mutual TLS)")
    if not (a.tls or a.tls_ca or a.tls_cert):
        return grpc.insecure_channel(a.target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(a.tls_ca) if a.tls_ca else None,
        private_key=_read(a.tls_key) if a.tls_key else None,
        certificate_chain=_read(a.tls_cert) if a.tls_cert else None)
    return grpc.secure_channel(a.target, credentials)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m service.client", description=__doc__)
    p.add_argument("--target", default="localhost:50051", help="server address")
    p.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    p.add_argument("--tls", action="store_true", help="use TLS, trusting the system's CAs (implied by the next three)")
    p.add_argument("--tls-ca", metavar="PEM", help="use TLS, trusting the CA certificate(s) in this file")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate for mutual TLS (with --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    p.add_argument("--token-file", metavar="FILE",
                   help=f"send the bearer token on this file's first line (default: ${TOKEN_ENV}, if set)")
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
    tr = sub.add_parser("translate", help="translate a text with a translator model, printed as it is decoded")
    tr.add_argument("text")
    tr.add_argument("--model", required=True)
    tr.add_argument("--version", type=int, default=0, help="0 = latest")
    tr.add_argument("--beam", type=int, default=1, help="beam size; 1 = greedy")
    tr.add_argument("--length-penalty", type=float, default=None, help="GNMT alpha for beam search (default: the model's)")
    tr.add_argument("--max-tokens", type=int, default=None, help="most output tokens (default: the model's length rule)")
    tr.add_argument("--attention", metavar="FILE", default="",
                    help="write the alignment: an HTML page (FILE.html, no dependencies) or a PNG (FILE.png, needs matplotlib)")
    tr.add_argument("--flush-chars", type=int, default=0, help="0 = server default")
    tr.add_argument("--flush-ms", type=int, default=0, help="0 = server default")
    cp = sub.add_parser("caption", help="caption images (JPEG or PNG) with a captioner model")
    cp.add_argument("images", nargs="+", metavar="IMAGE")
    cp.add_argument("--model", required=True)
    cp.add_argument("--version", type=int, default=0, help="0 = latest")
    cp.add_argument("--beam", type=int, default=1, help="beam size; 1 = greedy")
    cp.add_argument("--max-tokens", type=int, default=None, help="most words (default: the model's limit)")
    cp.add_argument("--attention", action="store_true",
                    help="write each image's attention pictures: IMAGE_STEM.attention.png and .html in --out-dir")
    cp.add_argument("--out-dir", default=".", help="where --attention writes (default: the current directory)")
    c = sub.add_parser("classify", help="label texts given as arguments or one per line in --file")
    c.add_argument("texts", nargs="*")
    c.add_argument("--file", help="read texts from this file, one per line ('-': standard input)")
    c.add_argument("--batch-size", type=_positive, default=64, help="texts per request (the server's limit, 64 by default)")
    c.add_argument("--model", required=True)
    c.add_argument("--version", type=int, default=0)
    m = sub.add_parser("models", help="list loaded models (or describe one) as JSON lines")
    m.add_argument("name", nargs="?")
    m.add_argument("--version", type=int, default=0)
    t = sub.add_parser("trace", help="read a text with a char LM and write an HTML page of its units' activations")
    t.add_argument("text", nargs="?", default="")
    t.add_argument("--file", help="read the text from this file instead")
    t.add_argument("--model", required=True)
    t.add_argument("--version", type=int, default=0)
    t.add_argument("--unit", action="append", default=[],
                   help="LAYER:UNIT or LAYER:FIRST-LAST, 0-based, repeatable (default: the last layer's first 64 units)")
    t.add_argument("--top-k", type=int, default=5, help="next-character predictions shown on hover")
    t.add_argument("-o", "--out", default="trace.html", help="the HTML page to write")
    sub.add_parser("reload", help="make the server read its model repository again now; prints what changed as JSON")
    a = p.parse_args(argv)
    token = _token(a)
    a.call = {"timeout": a.timeout, "metadata": (("authorization", f"Bearer {token}"),) if token else None}
    with _channel(a) as channel:
        stub = pb_grpc.AdminStub(channel) if a.cmd == "reload" else pb_grpc.InferenceStub(channel)
        commands = {"generate": _generate, "translate": _translate, "caption": _caption, "classify": _classify, "models": _models,
                    "trace": _trace, "reload": _reload}
        try:
            commands[a.cmd](stub, a)
        except grpc.RpcError as err:
            sys.exit(f"error: {err.code().name}: {err.details()}")
        except TextError as err:
            sys.exit(f"error: {err}")
        except KeyboardInterrupt:
            sys.exit(130)


if __name__ == "__main__":
    main()
