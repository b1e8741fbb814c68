"""What the two training commands (`clef pretrain`, `clef finetune`) share on the command line: the
config and its overrides, and the run-folder options, checked the same way before any data is read."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def add_run_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """``--config FILE``, ``KEY=VALUE`` overrides (``example`` shows some), ``--resume`` and
    ``--overwrite``."""
    parser.add_argument("--config", type=Path, help="YAML file of overrides of the defaults")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help=f"further overrides, e.g. {example}"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        metavar="CHECKPOINT",
        help="continue an interrupted run exactly, with its config (default: RUN_DIR/checkpoint.pt)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a RUN_DIR that already holds a run (removes that run's files, nothing else)",
    )


def run_folder_checked(args: argparse.Namespace, cfg, outputs: Sequence[str]) -> Path | None:
    """The checkpoint to resume from (None: a new run), after checking ``cfg.run_dir`` against
    ``--resume`` / ``--overwrite`` (:func:`clef.run_folder.check_run_folder`): a refusal comes before
    the data and the model are loaded. The engine checks the checkpoint itself.

    Raises:
        UserError: the folder holds a run and neither option is given; both options are given.
    """
    from clef.engine import CHECKPOINT_NAME
    from clef.run_config import fill_fold
    from clef.run_folder import check_run_folder

    run_dir = Path(fill_fold(cfg.run_dir, cfg.data.fold, "run_dir"))
    resume = None
    if args.resume is not None:
        resume = run_dir / CHECKPOINT_NAME if args.resume == "auto" else Path(args.resume)
    check_run_folder(run_dir, resume=resume is not None, overwrite=args.overwrite, outputs=outputs)
    return resume
