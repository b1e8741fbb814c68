"""The demo (``clef demo``): CLEF against the image-only baseline on the built-in world, end to end.

One call renders the world, pre-trains stage 1 (PA+PI) on the lab world's fold-1 training subjects,
fine-tunes CLEF (label names + L_DN with descriptions, from stage 1) and the image-only baseline I
(linear head, image tower from scratch, no stage 1) for AU detection (lab world, fold 1) and FER (wild
world), evaluates all four and writes ``report.md`` with PNG figures:

* ``au_f1.png`` — per-AU F1, CLEF vs I;
* ``fer_confusion.png`` — CLEF's and I's FER confusion matrices (row-normalised);
* ``comparison.png`` — AU mean F1 and FER accuracy, CLEF vs I;
* ``tsne.png`` — t-SNE of the image embeddings of the wild test images (I, stage 1 alone, CLEF),
  coloured by expression (docs/method.md §7, the paper's visualisation).

Sizes come from :data:`DEMO_PRESETS` (``default`` fits ≤ 10 minutes on a 2-core CPU, ``quick`` is
for tests). Synthetic numbers, never real-data results.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clef.evaluation import plot_au_f1, plot_confusions
from clef.experiments.reproduce import PRESETS
from clef.experiments.settings import ExperimentConfig, stage1_config, stage2_config
from clef.experiments.world import ensure_world, trivial_baselines
from clef.synth.world import WorldConfig

__all__ = ["DEMO_PRESETS", "DemoResult", "run_demo", "write_demo_report"]

DEMO_PRESETS: dict[str, ExperimentConfig] = {
    "default": ExperimentConfig(
        mode="demo",
        world=WorldConfig(lab_subjects=41, frames_per_video=12, wild_images=2000),
        stage1_steps=100,
        stage1_frames_per_activity=4,
        stage2_steps=150,
        batch_size=32,
    ),
    # The wiring check of the tests: reproduce's smallest setting.
    "quick": dataclasses.replace(PRESETS["micro"], mode="demo-quick"),
}

CLEF_SWITCHES = {"head": "names", "description_loss": True}  # I + N + D, from stage 1 PA+PI
BASELINE_SWITCHES = {"head": "linear", "description_loss": False}  # I, no stage 1


@dataclass
class DemoResult:
    """The four fine-tuned runs' metrics, figure paths and timings."""

    config: ExperimentConfig
    au: dict[str, object] = field(default_factory=dict)  # "CLEF" / "I" -> AUResult
    fer: dict[str, object] = field(default_factory=dict)  # "CLEF" / "I" -> FERResult
    figures: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    n_train: dict[str, int] = field(default_factory=dict)
    n_test: dict[str, int] = field(default_factory=dict)
    baselines: dict[str, object] = field(default_factory=dict)  # reproduce.trivial_baselines

    def headline(self) -> dict[str, float]:
        return {
            "au_mean_f1_clef": self.au["CLEF"].mean_f1,
            "au_mean_f1_i": self.au["I"].mean_f1,
            "fer_accuracy_clef": self.fer["CLEF"].accuracy,
            "fer_accuracy_i": self.fer["I"].accuracy,
        }


def run_demo(
    cfg: ExperimentConfig,
    out: str | Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo into ``out`` (world, runs, figures, ``report.md``); return the numbers."""
    from clef.checkpoint import load_checkpoint
    from clef.data import load_dataset
    from clef.finetune import finetune
    from clef.finetuned import load_finetuned
    from clef.inference import embed_images
    from clef.pretrain import pretrain
    from clef.visualize import plot_tsne

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(cfg)
    seed = cfg.seeds[0]
    start = time.perf_counter()
    log("[1/5] the built-in world")
    world = ensure_world(cfg.world, out / "world", log, progress)
    result.seconds["world"] = time.perf_counter() - start
    roots = {"au": world / "bp4d", "fer": world / "rafdb"}
    records = {"au": load_dataset("bp4d", roots["au"]), "fer": load_dataset("rafdb", roots["fer"])}
    result.baselines = trivial_baselines(cfg.au_fold, records["au"], records["fer"])

    t = time.perf_counter()
    log("[2/5] stage 1: weakly-supervised pre-training on the lab world (PA + PI)")
    s1 = pretrain(stage1_config(cfg, "pa_pi", seed, out / "runs" / "stage1", roots["au"], progress))
    stage1 = Path(s1.checkpoint).with_suffix("")
    result.seconds["stage1"] = time.perf_counter() - t

    models = {}
    for k, task in enumerate(("au", "fer")):
        for name, ckpt, switches in (("CLEF", stage1, CLEF_SWITCHES), ("I", None, BASELINE_SWITCHES)):
            t = time.perf_counter()
            what = "AU detection (lab world, fold 1)" if task == "au" else "FER (wild world)"
            log(f"[{3 + k}/5] stage 2: {name} for {what}")
            run = stage2_config(
                cfg, task, roots[task], out / "runs" / f"{task}_{name}", seed, ckpt, switches, progress
            )
            res = finetune(run, records=records[task], progress=progress)
            getattr(result, task)[name] = res.result
            result.n_train[f"{task}/{name}"] = res.n_train
            result.n_test[f"{task}/{name}"] = res.n_test
            models[(task, name)] = res.checkpoint
            result.seconds[f"{task}/{name}"] = time.perf_counter() - t

    t = time.perf_counter()
    log("[5/5] figures: per-AU F1, confusion matrices, comparison, t-SNE of the embeddings")
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    result.figures["au_f1"] = plot_au_f1(
        {"I": result.au["I"], "CLEF": result.au["CLEF"]},
        figures / "au_f1.png",
        "AU detection, lab world, fold 1 test subjects",
    )
    result.figures["fer_confusion"] = plot_confusions(
        {"I": result.fer["I"], "CLEF": result.fer["CLEF"]},
        figures / "fer_confusion.png",
        "FER confusion, wild world test split",
    )
    result.figures["comparison"] = _plot_comparison(result, figures / "comparison.png")
    test = records["fer"][records["fer"]["split"] == "test"]
    test = test[test["expression"].notna()]
    if len(test) > 800:  # t-SNE cost grows with N²; 800 points show the structure
        test = test.sample(n=800, random_state=seed)
    panels = []
    for title, loader in (
        ("I (baseline, FER-trained)", lambda: load_finetuned(models[("fer", "I")])[0].clef),
        ("stage 1 only (no labels)", lambda: load_checkpoint(stage1)[0]),
        ("CLEF (FER-trained)", lambda: load_finetuned(models[("fer", "CLEF")])[0].clef),
    ):
        emb = embed_images(loader(), test, device=cfg.device, progress=progress).numpy()
        panels.append((title, emb))
    result.figures["tsne"] = plot_tsne(
        panels,
        test["expression"].astype(str).to_numpy(),
        figures / "tsne.png",
        seed,
        title="t-SNE of image embeddings, wild world test images, coloured by expression",
    )
    result.seconds["figures"] = time.perf_counter() - t
    result.seconds["total"] = time.perf_counter() - start
    write_demo_report(result, out)
    return result


# ------------------------------------------------------------------------------------------ figures
def _plot_comparison(result: DemoResult, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.2))
    ax = fig.subplots()
    metrics = [
        ("AU mean F1", "au", "mean_f1"),
        ("FER accuracy", "fer", "accuracy"),
        ("FER macro-F1", "fer", "macro_f1"),
    ]
    x = np.arange(len(metrics))
    for offset, name, colour in ((-0.2, "I", "#8c8c8c"), (0.2, "CLEF", "#4c72b0")):
        vals = [100 * getattr(getattr(result, task)[name], attr) for _, task, attr in metrics]
        bars = ax.bar(x + offset, vals, 0.4, color=colour, label=name)
        for b, v in zip(bars, vals, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [m[0] for m in metrics])
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.set_title("CLEF (stage 1 + names + descriptions) vs image-only I", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


# ------------------------------------------------------------------------------------------ report
def write_demo_report(result: DemoResult, out: str | Path) -> Path:
    """Write ``out/report.md`` (+ ``out/results.json``) from a finished demo."""
    out = Path(out)
    cfg = result.config
    au_c, au_i, fer_c, fer_i = result.au["CLEF"], result.au["I"], result.fer["CLEF"], result.fer["I"]
    aus = au_c.aus
    au_rows = "\n".join(
        f"| {name} | " + " | ".join(f"{100 * f:.1f}" for f in r.f1) + f" | **{100 * r.mean_f1:.1f}** |"
        for name, r in (("I", au_i), ("CLEF", au_c))
    )
    base = "| base rate | " + " | ".join(f"{100 * b:.1f}" for b in au_c.base_rate) + " | |"
    secs = result.seconds
    figs = {k: Path(v).relative_to(out).as_posix() for k, v in result.figures.items()}
    blind = ""
    if b := result.baselines:  # what label-blind predictors score on the same test sets
        blind = (
            f'| label-blind (every AU present; always "{b["fer_majority_class"]}") '
            f"| {100 * b['au_all_positive_f1']:.1f} | {100 * b['fer_majority_accuracy']:.1f} | |\n"
        )
    text = f"""# clef demo: CLEF vs the image-only baseline on the built-in world

**Synthetic numbers, not real-data results.** Built-in world: {cfg.world.lab_subjects} lab subjects ×
8 tasks × {cfg.world.frames_per_video} frames (BP4D layout, AU labels) and {cfg.world.wild_images}
wild stills (RAF-DB layout, 7 expressions, 5 % label noise). Image encoder: a small CNN from scratch
(`{json.dumps(cfg.backbone_config)}`), text encoder: pretrained MiniLM (last
{cfg.text_trainable_blocks} block + projection trainable).

- **CLEF** = stage 1 (PA + PI: activity-text and same-activity image contrast, {cfg.stage1_steps}
  steps on fold 1's training subjects) → stage 2 with label names + descriptions (L_IN + L_DN),
  {cfg.stage2_steps} steps.
- **I** = the image-only baseline: same image encoder from scratch, linear head, {cfg.stage2_steps}
  steps, no stage 1, no text.

## Headline

| | AU mean F1 (lab, fold 1) | FER accuracy (wild) | FER macro-F1 |
|---|---|---|---|
| I | {100 * au_i.mean_f1:.1f} | {100 * fer_i.accuracy:.1f} | {100 * fer_i.macro_f1:.1f} |
| CLEF | {100 * au_c.mean_f1:.1f} | {100 * fer_c.accuracy:.1f} | {100 * fer_c.macro_f1:.1f} |
{blind}
![comparison]({figs["comparison"]})

## AU detection: per-AU F1 (%, threshold 0.5, {result.n_test.get("au/CLEF", 0)} test frames)

| model | {" | ".join(f"AU{a}" for a in aus)} | mean |
|---|{"---|" * len(aus)}---|
{au_rows}
{base}

![per-AU F1]({figs["au_f1"]})

## FER: confusion matrices ({result.n_test.get("fer/CLEF", 0)} test images)

![confusion]({figs["fer_confusion"]})

## t-SNE of the learned image embeddings

Wild test images, coloured by their (noisy) expression label: the baseline I after FER training,
the stage-1 model before any expression label, and CLEF after FER training.

![t-SNE]({figs["tsne"]})

## Run

Wall time **{secs["total"] / 60:.1f} min** (world {secs["world"]:.0f} s, stage 1 {secs["stage1"]:.0f} s,
AU CLEF {secs["au/CLEF"]:.0f} s, AU I {secs["au/I"]:.0f} s, FER CLEF {secs["fer/CLEF"]:.0f} s,
FER I {secs["fer/I"]:.0f} s, figures {secs["figures"]:.0f} s). Runs, checkpoints and per-run metric
files are under `runs/`; the paper's whole ablation and zero-shot tables: `clef reproduce`.
"""
    path = out / "report.md"
    path.write_text(text)
    data = {
        "config": dataclasses.asdict(cfg),
        "headline": result.headline(),
        "au": {k: v.to_dict() for k, v in result.au.items()},
        "fer": {k: v.to_dict() for k, v in result.fer.items()},
        "seconds": secs,
    }
    (out / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
