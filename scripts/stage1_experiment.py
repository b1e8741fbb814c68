"""The stage-1 representation experiment (issue 5; reports/stage1_experiment.md).

Pre-trains the image tower on the built-in lab world with three stage-1 objectives and probes the
frozen features of each (plus the start they all begin from) on fold 1's held-out subjects:

    (a) start   : no stage 1: the configured backbone as built (its pretrained weights, a new
                  projection initialised with the seed)
    (b) simclr  : instance NT-Xent only      loss.image_loss=simclr loss.image_text=false
    (c) pi      : L_II' (SupCon, activities)  loss.image_loss=supcon loss.image_text=false
    (d) pi+pa   : L_II' + L_IA               loss.image_loss=supcon loss.image_text=true

each with seeds 0, 1, 2. All other settings are in configs/pretrain/stage1_experiment.yaml.

    python scripts/stage1_experiment.py --world runs/exp/world48 --runs runs/exp --phase all

``--phase pretrain`` only trains (skipping runs whose stage1.safetensors exists), ``--phase probe``
only probes (and writes ``RUNS/results.json`` and the markdown table ``RUNS/table.md``).
The world: ``clef synth --out runs/exp/world48 --domains lab --subjects 41 --frames 48 --size 64``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from clef.evaluation import mean_std

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "pretrain" / "stage1_experiment.yaml"
ARMS: dict[str, list[str]] = {
    "simclr": ["loss.image_loss=simclr", "loss.image_text=false"],
    "pi": ["loss.image_loss=supcon", "loss.image_text=false"],
    "pi+pa": ["loss.image_loss=supcon", "loss.image_text=true"],
}
ORDER = ("start", "simclr", "pi", "pi+pa")
METRICS = (
    "au_f1",
    "expression_accuracy",
    "subject_accuracy",
    "subject_nn_accuracy",
    "subject_variance_share",
    "expression_variance_share",
)


def run_dir(runs: Path, arm: str, seed: int) -> Path:
    return runs / f"{arm.replace('+', '_')}-{seed}"


def pretrain_all(world: Path, runs: Path, seeds: list[int], extra: list[str]) -> None:
    for seed in seeds:
        for arm, overrides in ARMS.items():
            out = run_dir(runs, arm, seed)
            if (out / "stage1.safetensors").is_file():
                print(f"[skip] {out} exists", flush=True)
                continue
            cmd = [
                sys.executable,
                "-m",
                "clef",
                "pretrain",
                "--config",
                str(CONFIG),
                f"data.root={world / 'bp4d'}",
                f"run_dir={out}",
                f"seed={seed}",
                *overrides,
                *extra,
            ]
            print("$", " ".join(cmd), flush=True)
            start = time.perf_counter()
            subprocess.run(cmd, check=True)
            print(f"[time] {arm} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)


def spread(model, test_records) -> dict[str, float]:
    """How spread out the embeddings are (collapse check) on every 4th probe test frame
    (:func:`clef.probe.embedding_spread`)."""
    from clef.probe import embedding_spread, extract_features

    return embedding_spread(extract_features(model, test_records.iloc[::4].reset_index(drop=True), progress=False))


def probe_all(world: Path, runs: Path, seeds: list[int], frame_stride: int) -> dict:
    import torch
    import yaml

    from clef.checkpoint import load_checkpoint
    from clef.model import build_model
    from clef.probe import ProbeConfig, load_probe_records, probe_model

    base = yaml.safe_load(CONFIG.read_text())
    cfg = ProbeConfig(
        dataset="bp4d", root=str(world / "bp4d"), fold=1, frame_stride=frame_stride, progress=False
    )
    records = None
    results: dict[str, list[dict]] = {arm: [] for arm in ORDER}
    for seed in seeds:
        for arm in ORDER:
            cache = run_dir(runs, arm, seed) / f"probe-stride{frame_stride}.json"
            if cache.is_file():  # probed before (the script can run while later seeds still train)
                results[arm].append(json.loads(cache.read_text()))
                continue
            if arm != "start" and not (run_dir(runs, arm, seed) / "stage1.safetensors").is_file():
                print(f"[skip] {arm} seed {seed}: not pre-trained yet", flush=True)
                continue
            if records is None:
                records = load_probe_records(cfg)  # once: the same frames for every model
            start = time.perf_counter()
            if arm == "start":
                torch.manual_seed(seed)
                init = base.get("init", {})
                model = build_model(init.get("backbone", "offline"), init.get("backbone_config", {}))
            else:
                model, _ = load_checkpoint(run_dir(runs, arm, seed) / "stage1")
            result = probe_model(model, cfg, seed=seed, records=records)
            row = {
                "seed": seed,
                **{m: getattr(result, m) for m in METRICS},
                **spread(model, records[1]),
                "au_f1_per_au": result.au_f1_per_au,
            }
            results[arm].append(row)
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(row, indent=2))
            print(
                f"[probe] {arm} seed {seed}: {result.summary()} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    return results


def table(results: dict) -> str:
    lines = [
        "| representation | AU F1 (mean of 12) | expression accuracy | subject-ID accuracy (LR) "
        "| subject-ID accuracy (1-NN) | subject share of variance | expression share of variance "
        "| mean cosine | effective rank | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in ORDER:
        rows = results.get(arm) or []
        if not rows:
            continue
        cells = [mean_std([r[m] for r in rows if r[m] is not None]) for m in METRICS]
        cos = np.array([r["mean_cosine"] for r in rows if "mean_cosine" in r], dtype=float)
        rank = np.array([r["effective_rank"] for r in rows if "effective_rank" in r], dtype=float)
        cells += [f"{cos.mean():.4f}" if len(cos) else "", f"{rank.mean():.1f}" if len(rank) else ""]
        cells.append(str(len(rows)))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world", type=Path, default=Path("runs/exp/world48"))
    parser.add_argument("--runs", type=Path, default=Path("runs/exp"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--phase", choices=("pretrain", "probe", "all"), default="all")
    parser.add_argument("--probe-frame-stride", type=int, default=4, help="probe every n-th frame of a video")
    parser.add_argument("overrides", nargs="*", help="extra pretrain key=value overrides for every run")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.phase in ("pretrain", "all"):
        pretrain_all(args.world, args.runs, args.seeds, args.overrides)
        print(f"[time] pretraining: {time.perf_counter() - start:.0f} s", flush=True)
    if args.phase in ("probe", "all"):
        t0 = time.perf_counter()
        results = probe_all(args.world, args.runs, args.seeds, args.probe_frame_stride)
        (args.runs / "results.json").write_text(json.dumps(results, indent=2))
        text = table(results)
        (args.runs / "table.md").write_text(text)
        print(text)
        print(f"[time] probing: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"[time] total: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
