"""python -m bench.hostile: run the chosen attacks (bench/hostile/__init__.py says what each reports)."""

from __future__ import annotations

import argparse

from bench.hostile import __doc__ as DOC
from bench.hostile.classify import classify
from bench.hostile.reset import reset
from bench.hostile.scrapes import scrapes
from bench.hostile.server import ROOT
from bench.hostile.stream import stream
from bench.hostile.streams import streams
from bench.hostile.trace import trace

ATTACKS = {"classify": classify, "stream": stream, "streams": streams, "reset": reset, "trace": trace,
           "metrics": scrapes}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.hostile", description=(DOC or "").splitlines()[0])
    ap.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated, of {', '.join(ATTACKS)}")
    ap.add_argument("--model-dir", default=str(ROOT / "models"))
    ap.add_argument("--memory-limit-mb", type=int, default=1280, help="the server's memory cgroup (as deploy/ sets it)")
    ap.add_argument("--through-nginx", action="store_true", help="clients go through deploy/nginx/nginx.conf")
    ap.add_argument("--quick", action="store_true", help="small counts and times")
    args = ap.parse_args()
    unknown = set(args.attacks.split(",")) - set(ATTACKS)
    if unknown:
        ap.error(f"unknown attacks {sorted(unknown)}; known: {', '.join(ATTACKS)}")
    for name in args.attacks.split(","):
        ATTACKS[name](args)


if __name__ == "__main__":
    main()
