"""Cross-validation driver for the subject-exclusive k-fold protocols (docs/datasets.md: BP4D, DISFA, BP4D+).

For each fold: (optionally) stage 1 on that fold's training subjects only, then stage 2 on the same
training subjects, then the fold's test subjects are scored (threshold 0.5, never tuned). The
benchmark number is the mean over AUs per fold, then the mean over folds; we also give the standard
deviation over folds (sample std, ``ddof=1``; 0 with one fold).

Stage 1 per fold comes either from ``pretrain`` (a callable ``(fold, train_records, fold_dir) ->
checkpoint path``; :func:`stage1_per_fold` makes one that runs :func:`clef.pretrain.pretrain`), or
from the fine-tune config's ``init.checkpoint`` with ``{fold}`` in it (one checkpoint per fold, made
beforehand).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clef.data.folds import split_fold
from clef.errors import UserError
from clef.evaluation import AUResult, FERResult, mean_std
from clef.finetune import FinetuneConfig, FinetuneResult, finetune

__all__ = ["CrossvalResult", "cross_validate", "write_crossval", "PretrainFn", "stage1_per_fold"]

PretrainFn = Callable[[int, pd.DataFrame, Path], "str | Path"]


@dataclass
class CrossvalResult:
    """Per-fold stage-2 results and their summary."""

    task: str
    folds: list[int]
    runs: list[FinetuneResult]

    @property
    def results(self) -> list[AUResult | FERResult]:
        return [r.result for r in self.runs]

    def summary(self) -> dict:
        """JSON-ready: per-fold numbers, mean and std over folds (AU: per-AU F1 too)."""

        def stats(values: Sequence[float]) -> dict:
            v = np.asarray(values, dtype=np.float64)
            return {
                "per_fold": v.tolist(),
                "mean": float(v.mean()),
                "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            }

        out: dict = {"task": self.task, "folds": self.folds}
        if self.task == "au":
            results: list[AUResult] = self.results  # type: ignore[assignment]
            out["aus"] = results[0].aus
            out["mean_f1"] = stats([r.mean_f1 for r in results])
            out["per_au_f1"] = {
                f"AU{a}": stats([r.f1[j] for r in results]) for j, a in enumerate(results[0].aus)
            }
        else:
            for key in ("accuracy", "mean_class_accuracy", "macro_f1"):
                out[key] = stats([getattr(r, key) for r in self.results])
        out["run_dirs"] = [str(r.run_dir) for r in self.runs]
        out["init"] = [r.init for r in self.runs]
        out["train_seconds"] = [r.train_seconds for r in self.runs]
        return out


def stage1_per_fold(stage1_cfg, dataset: str | None = None, root: str | None = None) -> PretrainFn:
    """A ``pretrain`` callable for :func:`cross_validate` that runs stage 1 (:func:`clef.pretrain.pretrain`)
    with ``stage1_cfg`` on each fold's training subjects, written to ``<fold run>/stage1``.

    ``stage1_cfg.data.fold`` and ``run_dir`` are replaced per fold; when its ``data.root`` is empty the
    stage-2 ``dataset`` and ``root`` are used (stage 1 on the same lab data).
    """
    from clef.pretrain import pretrain

    def run(fold: int, train_records: pd.DataFrame, out: Path) -> Path:
        data = dataclasses.replace(stage1_cfg.data, fold=fold)
        if not data.root:
            if not root:
                raise UserError("the stage-1 config needs data.root (the lab data to pre-train on)")
            data = dataclasses.replace(data, root=str(root), dataset=dataset or data.dataset)
        result = pretrain(dataclasses.replace(stage1_cfg, run_dir=str(out), data=data))
        return result.checkpoint

    return run


def cross_validate(
    cfg: FinetuneConfig,
    folds: Sequence[int] = (1, 2, 3),
    records: pd.DataFrame | None = None,
    pretrain: PretrainFn | None = None,
    progress: bool = True,
) -> CrossvalResult:
    """Stage 2 (and stage 1 when ``pretrain`` is given) on each fold; runs go to ``run_dir/fold<k>``.

    Args:
        cfg: the fine-tune config; ``data.fold`` is replaced by each fold in turn.
        folds: the folds to run.
        records: the dataset's record table (loaded from ``cfg.data`` when None).
        pretrain: optional stage 1 per fold: ``(fold, train_records, fold_dir) -> checkpoint``; it
            only ever sees the fold's training subjects.

    Raises:
        UserError: no folds, or the evaluation is switched off (there would be nothing to average).
    """
    if not folds:
        raise UserError("cross-validation needs at least one fold")
    if not cfg.evaluate:
        raise UserError("cross-validation needs evaluate=true")
    if records is None:
        from clef.data import load_dataset

        records = load_dataset(cfg.data.dataset, cfg.data.root)
    protocol = records.attrs.get("protocol")
    runs = []
    for fold in folds:
        fold_dir = Path(cfg.run_dir) / f"fold{fold}"
        train_records, test_records = split_fold(records, fold, protocol)
        init = cfg.init
        if pretrain is not None:
            checkpoint = pretrain(fold, train_records, fold_dir / "stage1")
            init = dataclasses.replace(init, checkpoint=str(checkpoint))
        fold_cfg = dataclasses.replace(
            cfg, run_dir=str(fold_dir), init=init, data=dataclasses.replace(cfg.data, fold=fold)
        )
        runs.append(
            finetune(
                fold_cfg,
                records=records,
                progress=progress,
                train_records=train_records,
                test_records=test_records,
            )
        )
    return CrossvalResult(cfg.method.task, list(folds), runs)


def write_crossval(result: CrossvalResult, out: str | Path, title: str = "cross-validation") -> list[Path]:
    """Write ``crossval.json`` and ``crossval.md`` (per-fold rows, then mean ± std) in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    paths = [out / "crossval.json", out / "crossval.md"]
    paths[0].write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"**{title}** ({len(result.folds)} folds; mean ± sample std over folds)", ""]
    if result.task == "au":
        aus = [f"AU{a}" for a in summary["aus"]]
        lines += ["| fold | " + " | ".join(aus) + " | mean |", "|---|" + "---|" * (len(aus) + 1)]
        for k, fold in enumerate(result.folds):
            cells = [f"{100 * summary['per_au_f1'][a]['per_fold'][k]:.1f}" for a in aus]
            lines.append(
                f"| {fold} | " + " | ".join(cells) + f" | {100 * summary['mean_f1']['per_fold'][k]:.1f} |"
            )
        cells = [mean_std(summary["per_au_f1"][a]["per_fold"]) for a in aus]
        lines.append("| mean | " + " | ".join(cells) + f" | {mean_std(summary['mean_f1']['per_fold'])} |")
        lines.append("")
        lines.append("F1 x 100 at threshold 0.5, uncoded frames excluded.")
    else:
        keys = ("accuracy", "mean_class_accuracy", "macro_f1")
        lines += ["| fold | accuracy | mean class accuracy | macro-F1 |", "|---|---|---|---|"]
        for k, fold in enumerate(result.folds):
            lines.append(
                f"| {fold} | " + " | ".join(f"{100 * summary[m]['per_fold'][k]:.2f}" for m in keys) + " |"
            )
        lines.append(
            "| mean | " + " | ".join(mean_std(summary[m]["per_fold"], digits=2) for m in keys) + " |"
        )
    paths[1].write_text("\n".join(lines) + "\n")
    return paths
