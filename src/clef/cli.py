"""The `clef` command line: one subcommand per stage program.

Each subcommand lives in ``clef.commands.<name>`` and exposes ``add_parser(subparsers)``, which
registers its options and sets ``func`` (a callable taking the parsed namespace and returning an exit
status). This module only dispatches and turns :class:`clef.errors.UserError` into a one-line error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from clef import __version__
from clef.errors import UserError

# Subcommand name -> module. Order is the order `clef --help` lists them.
COMMANDS: dict[str, str] = {
    "synth": "clef.commands.synth",
    "data": "clef.commands.data",
    "prep": "clef.commands.prep",
    "list": "clef.commands.listing",
    "info": "clef.commands.info",
    "pretrain": "clef.commands.pretrain",
    "probe": "clef.commands.probe",
    "finetune": "clef.commands.finetune",
    "evaluate": "clef.commands.evaluate",
    "predict": "clef.commands.predict",
    "explain": "clef.commands.explain",
    "embed": "clef.commands.embed",
    "crossval": "clef.commands.crossval",
    "zeroshot": "clef.commands.zeroshot",
    "reproduce": "clef.commands.reproduce",
    "demo": "clef.commands.demo",
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (the usage text is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="clef",
        description="CLEF: text-driven contrastive learning for facial action units and expressions.",
    )
    parser.add_argument("--version", action="version", version=f"clef {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"clef: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clef: interrupted", file=sys.stderr)
        return 130
