"""``clef list backbones|prompts``: print the names users can type, one per line with a description."""

from __future__ import annotations

import argparse

TOPICS = ("backbones", "prompts")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("list", help="list the available backbones or prompt sets")
    parser.add_argument("topic", choices=TOPICS, help="what to list")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.topic == "backbones":
        from clef.model.backbones import BACKBONES, DEFAULT_BACKBONE

        rows = [
            (name, spec.description + (" [default]" if name == DEFAULT_BACKBONE else ""))
            for name, spec in BACKBONES.items()
        ]
    else:
        from clef.prompts import list_prompt_sets

        rows = list_prompt_sets()
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0
