"""Command line: python -m service.interpret cells MODEL_DIR [...]: score every unit of a char LM artifact (docs/cells.md).

Needs no torch: it reads the artifact's model.onnx as the server does (pictures need matplotlib).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cells(args: argparse.Namespace) -> None:
    from service.interpret import cells, features

    presets = {"prose": features.PROSE, "code": features.CODE, "all": [f.name for f in features.FEATURES]}
    names = presets.get(args.features) or args.features.split(",")
    out = args.out or f"runs/cells/{Path(args.model).resolve().parent.name}"
    report = cells.search(args.model, out, args.corpus, args.chars, names, args.labels, args.max_sentences, args.show,
                          args.top)
    print(f"{report['cell']} units of {args.model} over {report['chars']} characters of {report['corpus']}\n")
    print(cells.table(report["features"]))
    if report["gates"]:
        print("\ngate saturation (fraction of steps), mean over units:")
        print(cells.gate_table(report["gates"]))
    print(f"\nwrote {out}/cells.json, cells.html and the pictures")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m service.interpret", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cells", help="score every unit of a char LM artifact against text features (and sentiment)",
                       description="e.g. python -m service.interpret cells models/shakespeare-lstm/1 --features prose")
    c.add_argument("model", help="artifact directory, e.g. models/python-lstm/1")
    c.add_argument("--corpus", help="text to read (default: the validation split of the model's training corpus)")
    c.add_argument("--chars", type=int, default=30000, help="characters of the corpus to score")
    c.add_argument("--features", default="all", help="prose, code, all, or feature names separated by commas")
    c.add_argument("--labels", help="labelled sentences (GLUE TSV or '<label> <text>'): also score sentiment")
    c.add_argument("--max-sentences", type=int, default=1000)
    c.add_argument("--show", type=int, default=1200, help="characters on the pictures and the page")
    c.add_argument("--top", type=int, default=3, help="units listed per feature")
    c.add_argument("--out", help="output directory (default: runs/cells/<model name>)")
    args = p.parse_args(argv)
    try:
        _cells(args)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
