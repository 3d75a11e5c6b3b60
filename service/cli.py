"""The `rnnserve` command: one entry point over the `python -m` ones, so an installed package needs no checkout.

Each subcommand runs its module as `python -m` would. The training modules are only looked up when a
training subcommand is called, so `rnnserve serve`, `client` and `cells` never import torch or training/.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from dataclasses import dataclass
from typing import NoReturn

TRAIN_EXTRA = "pip install 'rnnserve[train]'"


@dataclass(frozen=True)
class Command:
    module: str  # run as `python -m module *prefix *args`
    prefix: tuple[str, ...]
    help: str
    needs_torch: bool = False


def _training(name: str, help: str) -> Command:
    return Command("training", (name,), help, needs_torch=True)


COMMANDS = {
    "serve": Command("service", (), "serve every model of a repository over gRPC (python -m service)"),
    "client": Command("service.client", (), "talk to a running server: generate, classify, models, trace, reload"),
    "cells": Command("service.interpret", ("cells",), "score every unit of a char LM artifact against text features "
                                                      "(python -m service.interpret; pictures need matplotlib)"),
    "train": _training("train", "train from a recipe (--config recipes/NAME.json, --key=value overrides) or --resume"),
    "eval": _training("eval", "validation loss and bits per character, or accuracy and confusion matrix"),
    "sample": _training("sample", "generate text from a char LM checkpoint"),
    "export": _training("export", "write a verified ONNX artifact (model.onnx, tokenizer.json, meta.json)"),
    "code-corpus": _training("code-corpus", "gather the Python standard library's source into one corpus file"),
}


def usage() -> str:
    """The top-level help: every subcommand, serving ones first."""
    width = max(map(len, COMMANDS))
    lines = ["usage: rnnserve COMMAND [ARGS...]   (rnnserve COMMAND --help for its arguments)"]
    for title, torch in (("serving (no torch):", False), (f"training (python -m training; needs torch: {TRAIN_EXTRA}):", True)):
        lines += ["", title]
        lines += [f"  {name:<{width}}  {c.help}" for name, c in COMMANDS.items() if c.needs_torch == torch]
    return "\n".join(lines)


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
    name, rest = args[0], args[1:]
    command = COMMANDS.get(name) or _usage_error(f"rnnserve: unknown command {name!r}")
    if command.needs_torch and (importlib.util.find_spec("torch") is None or importlib.util.find_spec("training") is None):
        sys.exit(f"rnnserve {name} needs torch, which is not installed here: {TRAIN_EXTRA}")
    # As `python -m`: the module runs as __main__ and sees its own arguments (its parser names itself).
    sys.argv = [command.module, *command.prefix, *rest]
    runpy.run_module(command.module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
