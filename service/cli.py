"""The `rnnserve` command: one entry point over the `python -m` ones, so an installed package needs no checkout.

Each subcommand runs its module as `python -m` would. The training modules are only looked up when a
training subcommand is called, so `rnnserve serve` and `rnnserve client` never import torch or training/.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from typing import NoReturn

SERVING = {
    "serve": ("service", "serve every model of a repository over gRPC (python -m service)"),
    "client": ("service.client", "talk to a running server: generate, classify, models, trace, reload"),
}
TRAINING = {
    "train": "train from a recipe (--config recipes/NAME.json, --key=value overrides) or --resume a checkpoint",
    "eval": "validation loss and bits per character, or accuracy and confusion matrix",
    "sample": "generate text from a char LM checkpoint",
    "export": "write a verified ONNX artifact (model.onnx, tokenizer.json, meta.json)",
    "cells": "score every unit of a char LM artifact against text features",
    "code-corpus": "gather the Python standard library's source into one corpus file",
}
TRAIN_EXTRA = "pip install 'rnnserve[train]'"


def usage() -> str:
    """The top-level help: every subcommand with the module it runs."""
    width = max(map(len, [*SERVING, *TRAINING]))
    lines = ["usage: rnnserve COMMAND [ARGS...]   (rnnserve COMMAND --help for its arguments)", "", "serving:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in SERVING.items()]
    lines += ["", f"training (python -m training COMMAND; needs torch: {TRAIN_EXTRA}):"]
    lines += [f"  {name:<{width}}  {text}" for name, text in TRAINING.items()]
    return "\n".join(lines)


def _run_module(module: str, args: list[str]) -> None:
    """Run `module` as `python -m module args...` would (its parser names itself: `python -m module`)."""
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _usage_error(message: str) -> NoReturn:
    """Exit as argparse does on a bad command line: the message and the usage on stderr, status 2."""
    print(f"{message}\n\n{usage()}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        _usage_error("rnnserve: a command is required")
    if args[0] in ("-h", "--help"):
        print(usage())
        return
    command, rest = args[0], args[1:]
    if command in SERVING:
        _run_module(SERVING[command][0], rest)
    elif command in TRAINING:
        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("training") is None:
            sys.exit(f"rnnserve {command} trains with torch, which is not installed here: {TRAIN_EXTRA}")
        _run_module("training", [command, *rest])
    else:
        _usage_error(f"rnnserve: unknown command {command!r}")


if __name__ == "__main__":
    main()
