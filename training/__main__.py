"""Command line: python -m training {train, eval, sample, export, quantize, code-corpus, gradients} (see --help of each).

`python -m training cells ...` runs the cell search, which lives with the tracer it reads (python -m service.interpret).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def _train(args: argparse.Namespace, overrides: list[str]) -> None:
    from training.config import load_config
    from training.distributed import session
    from training.train import train

    if args.resume and (args.config or overrides):
        sys.exit("--resume continues a checkpoint with its saved config; do not pass --config or overrides")
    if not args.resume and not args.config and not overrides:
        sys.exit("train needs --config RECIPE (and/or --key=value overrides), or --resume CKPT")
    cfg = None if args.resume else load_config(args.config, overrides)
    with session() as world:  # under torchrun: this rank of the data-parallel job; otherwise one process
        ckpt = train(cfg, resume=args.resume, progress=not args.quiet, world=world)
    if world.is_main:
        print(json.dumps({"checkpoint": f"{ckpt['config']['out_dir']}/last.pt", "step": ckpt["step"],
                          "elapsed_s": round(ckpt["elapsed_s"], 1), **_floats(ckpt["metrics"])}))


def _floats(m: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}


def _eval(args: argparse.Namespace) -> None:
    import torch

    from service.artifact.corpus import read_sentences, read_text
    from training.data import CharCorpus
    from training.evaluate import evaluate_classifier, evaluate_lm
    from training.open_model import open_model

    torch.set_num_threads(args.threads)
    opened = open_model(args.checkpoint, args.threads)
    cfg, model, tok = opened.config, opened.model, opened.tokenizer
    if cfg is not None and cfg.task == "translation":
        from training.translation_eval import evaluate_translation

        result = evaluate_translation(model, tok, cfg, args.data or cfg.data.val_path, args.beam)
        print(json.dumps(_floats(result), indent=1))
        return
    if cfg is not None and cfg.task == "captioning":
        from training.caption_task import evaluate_captioner

        result = evaluate_captioner(model, tok, cfg, args.split, args.beam)
        print(json.dumps(_floats(result), indent=1))
        return
    if cfg is None and not args.data:
        raise ValueError(f"{args.checkpoint} does not record its training data: pass --data FILE")
    if opened.kind == "char_lm":
        path = args.data or cfg.data.path
        if args.data:  # a separate test file: score all of it
            ids = tok.encode(read_text(path))
        else:
            ids = CharCorpus.from_file(path, cfg.data.val_fraction, tokenizer=tok).val
        result = evaluate_lm(model, ids, batch_size=args.batch_size)
    else:
        if cfg is None:
            raise ValueError(f"{args.checkpoint} does not record its label set")
        # Another file is read in its own format (--format, or detected); the recipe's format is for its own files.
        path, fmt = (args.data, args.format or "auto") if args.data else (cfg.data.val_path, cfg.data.format)
        result = evaluate_classifier(model, tok, read_sentences(path, cfg.data.labels, fmt))
        result["labels"] = list(cfg.data.labels.values())
    print(json.dumps({"model": str(args.checkpoint), "source": opened.source, "data": str(path), **_floats(result)},
                     indent=1))


def _sample(args: argparse.Namespace) -> None:
    import torch

    from training.open_model import open_model
    from training.sample import generate

    torch.set_num_threads(args.threads)
    opened = open_model(args.checkpoint, args.threads)
    if opened.kind != "char_lm":
        raise ValueError(f"{args.checkpoint} is a {opened.kind}: sample needs a char_lm")
    text = generate(opened.model, opened.tokenizer, args.prime, args.n, args.temperature, args.top_k, args.top_p,
                    args.seed)
    print(args.prime + text)


def _export(args: argparse.Namespace) -> None:
    from training.export import describe, export_checkpoint

    meta = export_checkpoint(args.checkpoint, args.out_dir, description=args.description)
    print(f"wrote {args.out_dir}: verified against torch")
    print(describe(meta))
    if args.quantize:
        _write_int8(Path(args.out_dir), Path(args.out_dir).parent / str(int(Path(args.out_dir).name) + 1), args.method)


def _quantize(args: argparse.Namespace) -> None:
    _write_int8(Path(args.src_dir), Path(args.out_dir), args.method)


def _write_int8(src_dir: Path, out_dir: Path, method: str | None) -> None:
    from training.quantize import quantize_artifact

    meta = quantize_artifact(src_dir, out_dir, method)
    print(f"wrote {out_dir}: int8, verified and within the quality gate")
    print(json.dumps(meta.evaluation["quantization"], indent=1))


def _code_corpus(args: argparse.Namespace) -> None:
    from training.pycorpus import build

    print(json.dumps(build(args.out, args.max_chars), indent=1))


def _gradients(args: argparse.Namespace) -> None:
    from training.gradient_report import command

    command(args.out, args.data, args.models, args.quick)


MODEL_HELP = "a checkpoint (runs/NAME/last.pt) or a model directory (models/NAME/VERSION, run by ONNX Runtime)"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cells"]:  # interpretability needs no torch: the service's tools read the artifact
        sys.exit(subprocess.call([sys.executable, "-m", "service.interpret", *argv]))
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train from a recipe; extra --key=value arguments override it",
                       description="e.g. python -m training train --config recipes/shakespeare-lstm.json --max_steps=100; "
                                   "data-parallel on N processes: torchrun --nproc_per_node=N -m training train ...")
    t.add_argument("--config", help="JSON recipe (see recipes/)")
    t.add_argument("--resume", help="checkpoint to continue exactly where it stopped")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    e = sub.add_parser("eval", help="loss/bpc (char LM), accuracy/confusion (classifier), loss/BLEU (translation), "
                                    "loss/BLEU/CIDEr (captioning checkpoint)")
    e.add_argument("checkpoint", help=MODEL_HELP)
    e.add_argument("--data", help="another file to score (default: the validation split of training); "
                                  "translation: a pair's stem, e.g. ../shared/data/multi30k/test2016")
    e.add_argument("--format", choices=["tsv", "label_line"],
                   help="--data's format for a classifier: GLUE TSV or '<label> <sentence>' lines (default: detected)")
    e.add_argument("--beam", type=int, default=1, help="translation, captioning: beam size (1 = greedy)")
    e.add_argument("--split", choices=["train", "dev", "test"], default="dev",
                   help="captioning: the Flickr8k split to caption and score (BLEU-1..4, CIDEr)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--threads", type=int, default=2)
    s = sub.add_parser("sample", help="generate text from a char LM checkpoint or artifact")
    s.add_argument("checkpoint", help=MODEL_HELP)
    s.add_argument("--prime", default="\n", help="text that primes the state")
    s.add_argument("-n", type=int, default=500, help="characters to generate")
    s.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    s.add_argument("--top-k", type=int, default=0, help="0 = no limit")
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=2)
    x = sub.add_parser("export", help="write a verified ONNX artifact (model.onnx, tokenizer.json, meta.json)")
    x.add_argument("checkpoint")
    x.add_argument("out_dir", help="e.g. models/shakespeare-lstm/1")
    x.add_argument("--description", default="")
    x.add_argument("--quantize", choices=["int8"], help="also write the int8 graph as the next version (see quantize)")
    q = sub.add_parser("quantize", help="write an int8 version of an fp32 artifact, verified and quality-gated",
                       description="e.g. python -m training quantize models/shakespeare-lstm/1 models/shakespeare-lstm/2 "
                                   "(run from the repository root: meta.json's data paths are relative to it)")
    q.add_argument("src_dir", help="an fp32 artifact, e.g. models/NAME/1")
    q.add_argument("out_dir", help="the new version directory, e.g. models/NAME/2")
    for parser in (x, q):
        parser.add_argument("--method", choices=["static", "dynamic"],
                            help="static: the cell of an LSTM or GRU char LM or an LSTM classifier as int8 MatMuls with "
                                 "fixed activation scales, rows batch-independent (default for them); dynamic: onnxruntime "
                                 "quantize_dynamic, any graph, activation scales per call (default for the others)")
    k = sub.add_parser("code-corpus", help="gather the Python standard library's source into one corpus file")
    k.add_argument("out", help="e.g. runs/data/python-stdlib.txt (never committed)")
    k.add_argument("--max-chars", type=int, default=4_000_000)
    r = sub.add_parser("gradients", help="measure vanishing/exploding gradients, clipping and context use; write figures",
                       description="e.g. python -m training gradients --out docs/gradients (a few CPU-minutes)")
    r.add_argument("--out", default="docs/gradients", help="directory for the PNGs and tables.md")
    r.add_argument("--quick", action="store_true", help="a small version of every experiment (about a CPU-minute)")
    r.add_argument("--data", help="tiny shakespeare (default: the path the recipes name)")
    r.add_argument("--models", default="models", help="bundled artifacts whose context use is measured")
    args, rest = p.parse_known_args(argv)
    if rest and args.cmd != "train":
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.cmd == "train":
            _train(args, rest)
        else:
            {"eval": _eval, "sample": _sample, "export": _export, "quantize": _quantize, "code-corpus": _code_corpus,
             "gradients": _gradients}[args.cmd](args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
