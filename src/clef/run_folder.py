"""A training run's folder: what a run leaves there, refusing to mix two runs, tidying up after a kill.

The engine (:func:`clef.engine.train`) writes ``config.yaml`` (the merged config), ``metrics.jsonl``
(one JSON record per logged step), ``checkpoint.pt`` (the resumable state) and, when asked,
``tensorboard/``. A stage program adds its own outputs (``stage1.safetensors`` ...) and passes
their names as ``outputs``. The rules, all checked before anything is written:

* a folder that already holds a run (any of those files) is refused unless the run is resumed or
  overwritten: a second run into the same folder would otherwise mix two runs' logs;
* overwriting removes exactly those files and folders, nothing else the folder holds;
* files are replaced atomically (:func:`atomic_write`: temporary file, fsync, ``os.replace``), so a
  kill leaves the old or the new file, never half of one; the temporary file a kill leaves behind is
  removed when the next run in the folder starts (:func:`remove_temporaries`);
* resuming keeps the complete ``metrics.jsonl`` records up to the checkpoint's step; a torn last
  line (what a kill in mid-write leaves) is dropped (:func:`truncate_metrics`).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from clef.errors import UserError

__all__ = [
    "CONFIG",
    "METRICS",
    "CHECKPOINT",
    "TENSORBOARD",
    "RUN_FILES",
    "atomic_write",
    "temporary_path",
    "existing_run_files",
    "check_run_folder",
    "clear_run_folder",
    "remove_temporaries",
    "truncate_metrics",
]

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
TENSORBOARD = "tensorboard"
RUN_FILES = (CONFIG, METRICS, CHECKPOINT)  # any of them: the folder holds a run


def temporary_path(path: Path) -> Path:
    """Where :func:`atomic_write` writes ``path`` first: a hidden sibling named after this process."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through ``write(temporary)``, then move it into place in one step.

    The temporary file is flushed to disk before ``os.replace`` (atomic on POSIX), so a reader, or a
    run resumed after a kill or a power cut, sees the old file or the new one. On an exception the
    temporary file is removed and the old file is left as it was. The folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        write(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def existing_run_files(run_dir: str | Path, outputs: Sequence[str] = ()) -> list[str]:
    """The names among :data:`RUN_FILES` and ``outputs`` that exist in ``run_dir``."""
    run_dir = Path(run_dir)
    return [name for name in (*RUN_FILES, *outputs) if (run_dir / name).exists()]


def check_run_folder(
    run_dir: str | Path, *, resume: bool, overwrite: bool, outputs: Sequence[str] = ()
) -> None:
    """Refuse to start a new run in a folder that already holds one (reads only, writes nothing).

    Args:
        run_dir: the run folder (it need not exist).
        resume: the run continues from a checkpoint: the folder may hold its run.
        overwrite: the run replaces the folder's run (:func:`clear_run_folder` removes it).
        outputs: the stage program's own files in the folder, besides :data:`RUN_FILES`.

    Raises:
        UserError: both ``resume`` and ``overwrite``, or neither while the folder holds a run (the
            message names the folder and the files found).
    """
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other: continue the run or start it over")
    found = [] if resume or overwrite else existing_run_files(run_dir, outputs)
    if found:
        raise UserError(
            f"{run_dir} already holds a run ({', '.join(found)}): continue it with --resume, start it "
            "over with --overwrite (removes those files), or choose another folder"
        )


def clear_run_folder(run_dir: str | Path, outputs: Sequence[str] = ()) -> list[str]:
    """Remove the files and folders a run wrote in ``run_dir`` (nothing else); return their names."""
    run_dir = Path(run_dir)
    removed = [p.name for p in remove_temporaries(run_dir, outputs)]
    for name in (*RUN_FILES, TENSORBOARD, *outputs):
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def remove_temporaries(run_dir: str | Path, outputs: Sequence[str] = ()) -> list[Path]:
    """Remove the temporary files (:func:`temporary_path`) of :data:`RUN_FILES` and ``outputs`` that
    killed writes left; return them.

    Call it only where no other process writes into ``run_dir`` (one run per folder).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    names = (*RUN_FILES, *outputs)
    found = [p for name in names for p in run_dir.glob(f".{glob.escape(name)}.tmp*") if p.is_file()]
    for path in found:
        path.unlink(missing_ok=True)
    return found


def truncate_metrics(path: str | Path, step: int) -> None:
    """Keep the records of ``metrics.jsonl`` up to ``step`` (a resumed checkpoint's), atomically.

    The records after ``step`` were logged by a killed run after its last checkpoint and are about
    to be redone. A torn last line (no complete JSON record: a kill in mid-write) is dropped.

    Raises:
        UserError: another line is not a JSON record with a ``step`` (names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text(errors="replace").split("\n")
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the last line, without its newline: torn by a kill
                break
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise UserError(f"{path}:{number}: not a metrics record (a JSON object with a 'step')")
        if record["step"] <= step:
            kept.append(line + "\n")
    atomic_write(path, lambda tmp: tmp.write_text("".join(kept)))
