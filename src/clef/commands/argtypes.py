"""argparse ``type=`` validators shared by the subcommands; each failure is a one-line usage error."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def int_at_least(minimum: int):
    """Return a parser for integers >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def float_in(low: float, high: float):
    """Return a parser for floats in the closed interval [low, high]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def writable_dir(text: str) -> Path:
    """A folder that exists and is writable, or can be created (its nearest existing parent is writable)."""
    path = Path(text)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise argparse.ArgumentTypeError(f"{probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write to {probe}")
    return path


def writable_file(text: str) -> Path:
    """A file path whose folder exists and is writable, or can be created."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file name")
    writable_dir(str(path.parent if str(path.parent) else "."))
    return path
