"""Image embeddings of a dataset on disk, beside the record table they belong to (`clef embed`).

``DIR/embeddings.npy`` (or ``embeddings.safetensors``, tensor ``embeddings``) holds the (N, D) float32
unit-norm embeddings; ``DIR/records.csv`` (or ``records.parquet``) holds the N record-table rows in the
same order (row k of the table is row k of the matrix); ``DIR/embeddings.json`` says which model made
them and how many there are. :func:`read_embeddings` reads the pair back and checks that they match.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clef.errors import UserError
from clef.run_folder import atomic_write

__all__ = ["EMBEDDING_FORMATS", "TABLE_FORMATS", "write_embeddings", "read_embeddings"]

EMBEDDING_FORMATS = ("npy", "safetensors")
TABLE_FORMATS = ("csv", "parquet")


def write_embeddings(
    out: str | Path,
    embeddings: np.ndarray,
    records: pd.DataFrame,
    fmt: str = "npy",
    table: str = "csv",
    about: dict[str, Any] | None = None,
) -> list[Path]:
    """Write the matrix, the table and ``embeddings.json`` (``about`` + shape + file names) into ``out``.

    Raises:
        UserError: an unknown format, Parquet without pyarrow, or a row count that differs.
    """
    if fmt not in EMBEDDING_FORMATS:
        raise UserError(f"unknown embedding format {fmt!r}; valid: {', '.join(EMBEDDING_FORMATS)}")
    if table not in TABLE_FORMATS:
        raise UserError(f"unknown table format {table!r}; valid: {', '.join(TABLE_FORMATS)}")
    if len(embeddings) != len(records):
        raise ValueError(f"{len(embeddings)} embeddings but {len(records)} records")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    matrix_path = out / f"embeddings.{fmt}"
    if fmt == "npy":
        atomic_write(matrix_path, lambda tmp: _save_npy(tmp, matrix))
    else:
        import torch
        from safetensors.torch import save_file

        atomic_write(matrix_path, lambda tmp: save_file({"embeddings": torch.from_numpy(matrix)}, tmp))
    table_path = out / f"records.{table}"
    rows = records.reset_index(drop=True)
    if table == "csv":
        atomic_write(table_path, lambda tmp: rows.to_csv(tmp, index=False))
    else:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UserError(
                "a Parquet table needs pyarrow (pip install pyarrow); or use --table csv"
            ) from None
        atomic_write(table_path, lambda tmp: rows.to_parquet(tmp, index=False))
    meta = {
        **(about or {}),
        "rows": len(rows),
        "dim": int(matrix.shape[1]),
        "embeddings": matrix_path.name,
        "records": table_path.name,
    }
    meta_path = out / "embeddings.json"
    text = json.dumps(meta, indent=2) + "\n"
    atomic_write(meta_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return [matrix_path, table_path, meta_path]


def _save_npy(path: str, matrix: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a file object: np.save would append ".npy" to a temporary name
        np.save(handle, matrix)


def read_embeddings(folder: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """``(embeddings (N, D), records)`` written by :func:`write_embeddings`.

    Raises:
        UserError: the folder lacks the files, or they disagree in length.
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / "embeddings.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{folder}: no embeddings.json (not a clef embed folder)") from None
    matrix_path, table_path = folder / meta["embeddings"], folder / meta["records"]
    if matrix_path.suffix == ".npy":
        matrix = np.load(matrix_path, allow_pickle=False)
    else:
        from safetensors.numpy import load_file

        matrix = load_file(str(matrix_path))["embeddings"]
    records = pd.read_csv(table_path) if table_path.suffix == ".csv" else pd.read_parquet(table_path)
    if len(matrix) != len(records):
        raise UserError(f"{folder}: {len(matrix)} embeddings but {len(records)} records")
    return matrix, records
