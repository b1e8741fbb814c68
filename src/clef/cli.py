"""The `clef` command line: one subcommand per stage program.

Each subcommand lives in ``clef.commands.<name>`` and exposes ``add_parser(subparsers)``, which
registers its options and sets ``func`` (a callable taking the parsed namespace and returning an exit
status). This module only dispatches, and decides what leaves the program:

* :class:`clef.errors.UserError` (bad input): one line ``clef: error: ...`` on stderr, exit status 2;
* an interrupt (Ctrl-C): ``clef: interrupted``, exit status 130;
* output piped into a reader that stops early (``clef data check ... | head -1``): nothing more is
  printed, exit status 141 (128 + SIGPIPE, what a program killed by the broken pipe would give);
* any other exception is a bug in clef: its traceback, then a line saying so, exit status 1.

Options may be given anywhere among the ``key=value`` overrides of a subcommand
(``clef finetune data.fold=2 --quiet engine.steps=3``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

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


BUG_EXIT = 1
BROKEN_PIPE_EXIT = 141


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (the usage text is one ``--help`` away),
    and whose subcommands take their options in any position between positional arguments."""

    _intermixing = False

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        # Plain argparse gives a `nargs="*"` positional only the run of values before the first
        # option, so `a=1 --quiet b=2` would leave `b=2` unrecognised. Intermixed parsing reads the
        # options first, then the positionals; it cannot drive subcommands, so a parser that has
        # them (the top level, `clef data`) parses plainly and its subcommand parsers intermix.
        if self._intermixing or any(
            a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in self._get_positional_actions()
        ):
            return super().parse_known_args(args, namespace)
        args = list(sys.argv[1:] if args is None else args)
        self._intermixing = True
        try:
            parsed, extras = self.parse_known_intermixed_args(args, namespace)
            # An unknown option cuts the run of positionals in two, so the values after it come back
            # as extras too; parse once more without it so that only the option is reported.
            unknown = [a for a in extras if a.startswith("-") and a != "-"]
            if unknown and len(unknown) < len(extras):
                parsed, rest = self.parse_known_intermixed_args(
                    [a for a in args if a not in unknown], namespace
                )
                extras = unknown + rest
            return parsed, extras
        finally:
            self._intermixing = False


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
    try:
        args = parser.parse_args(argv)
        status = int(args.func(args) or 0)
        # Flush here, so that a reader who stopped early is noticed inside this handler rather than
        # when the interpreter flushes stdout at exit (a traceback nobody can catch).
        sys.stdout.flush()
        return status
    except UserError as err:
        print(f"clef: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clef: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE_EXIT
    except SystemExit:
        # `--help` and usage errors leave through argparse; their text may still sit in the buffer.
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            return BROKEN_PIPE_EXIT
        raise
    except Exception:
        traceback.print_exc()
        print(
            f"clef: this is a bug in clef {__version__}, not a problem with your input; please report it "
            "to the clef developers with the command line and the traceback above",
            file=sys.stderr,
        )
        return BUG_EXIT


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that output still buffered is dropped quietly at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests capture it)
        pass
