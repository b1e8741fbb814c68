"""`clef reproduce`: the row mapping, the run configs, the report layout, and a micro end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clef.cli import main
from clef.experiments.ablation import ABLATION_ROWS
from clef.experiments.reproduce import PRESETS, ROWS, ReproduceResult, write_report
from clef.experiments.settings import stage1_config, stage2_config
from clef.labels import BP4D_AUS
from clef.zeroshot import ZeroShotScore


def test_rows_mirror_the_paper_table():
    assert len(ROWS) == 10
    assert [r.model for r in ROWS] == ["base"] * 3 + ["CLEF"] * 7
    paper = {r.key: r for r in ABLATION_ROWS}
    for row in ROWS:
        ref = paper[row.paper.key]
        assert (row.n, row.d) == (ref.n, ref.d)
        assert (row.pa, row.pi) == ((ref.pa, ref.pi) if row.model == "CLEF" else (False, False))
    assert ROWS[-1].switches == {"head": "names", "description_loss": True}
    assert [r for r in ROWS if r.d and not r.n][0].switches["head"] == "descriptions"


def test_every_row_builds_a_valid_run(tmp_path):
    cfg = PRESETS["quick"]
    for variant in ("pi", "pa_pi"):
        s1 = stage1_config(cfg, variant, 0, tmp_path / variant, tmp_path, progress=False)
        assert s1.loss.image_loss == "supcon" and s1.loss.image_text == (variant == "pa_pi")
        assert s1.data.fold == cfg.au_fold  # stage 1 never sees the AU test subjects
    for row in ROWS:
        for task in ("au", "fer"):
            ckpt = tmp_path / "stage1" if row.stage1 else None
            run = stage2_config(
                cfg, task, tmp_path, tmp_path / row.key, 0, ckpt, row.switches, progress=False
            )
            run.method.validate()
            assert (run.init.checkpoint is None) == (row.model == "base")
            assert run.method.task == task and run.data.fold == (cfg.au_fold if task == "au" else None)


def _score(protocol: str, texts: str, acc: float) -> ZeroShotScore:
    return ZeroShotScore(
        protocol, texts, ["a", "b", "c", "d"], ["c", "d"], acc, 0.25, acc, 0.25, acc, 0.5, 10, 20
    )


def test_report_layout_mean_and_std(tmp_path):
    cfg = PRESETS["quick"].__class__(mode="full", seeds=(0, 1))
    result = ReproduceResult(cfg)
    for row in ROWS:
        result.ablation[row.key] = {"au": [0.40, 0.50], "fer": [0.60, 0.70]}
    for model, acc in (("base", 0.2), ("CLEF", 0.4)):
        result.zeroshot[f"unseen-expressions/names/{model}"] = [
            _score("unseen-expressions", "names", acc)
        ] * 2
        result.zeroshot[f"au-to-fer/names/{model}"] = [_score("au-to-fer", "names", acc)] * 2
    result.seconds["total"] = 120.0
    report = write_report(result, tmp_path).read_text()
    assert "| CLEF | ✓ | ✓ | ✓ | ✓ | ✓ | 45.0 ± 7.1 | 65.00 ± 7.07 | CLEF | 65.9 | 90.09 |" in report
    assert "| base |  |  | ✓ |  |  | 45.0 ± 7.1 |" in report
    assert "| 20.0 ± 0.0 | 40.0 ± 0.0 | 25.0 |" in report  # base, CLEF, chance
    assert "Synthetic numbers, not real-data results" in report and "2.0 min" in report
    assert (tmp_path / "ablation.png").stat().st_size > 0 and (tmp_path / "zeroshot.png").stat().st_size > 0


@pytest.mark.slow
def test_reproduce_micro_end_to_end(tmp_path: Path):
    out = tmp_path / "repro"
    assert main(["reproduce", "--micro", "--out", str(out), "--quiet", "--threads", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["ablation"]) == {r.key for r in ROWS}
    assert all(len(v["au"]) == 1 and len(v["fer"]) == 1 for v in results["ablation"].values())
    assert {k.split("/")[0] for k in results["zeroshot"]} == {"unseen-expressions", "au-to-fer"}
    assert "| base |" in (out / "report.md").read_text()


def test_results_round_trip_and_merge(tmp_path):
    from clef.experiments.reproduce import load_results, merge_results

    parts = []
    for seed, value in ((0, 0.4), (1, 0.5)):
        r = ReproduceResult(PRESETS["quick"].__class__(seeds=(seed,)))
        r.ablation = {"04_base_i": {"au": [value], "fer": [value]}}
        r.zeroshot = {"au-to-fer/names/base": [_score("au-to-fer", "names", value)]}
        r.seconds = {f"stage1/pi/seed{seed}": 1.0, "total": 2.0}
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "results.json").write_text(json.dumps(r.to_dict()))
        parts.append(load_results(tmp_path / f"s{seed}"))
    merged = merge_results(parts)
    assert merged.config.seeds == (0, 1) and merged.ablation["04_base_i"]["au"] == [0.4, 0.5]
    assert [s.accuracy_unseen for s in merged.zeroshot["au-to-fer/names/base"]] == [0.4, 0.5]
    with pytest.raises(ValueError, match="share seeds"):
        merge_results([parts[0], parts[0]])


def test_trivial_baselines_match_a_hand_count(tmp_path):
    from clef.data import load_dataset
    from clef.data.folds import split_fold
    from clef.experiments.world import ensure_world, world_baselines

    cfg = PRESETS["micro"]
    world = ensure_world(cfg.world, tmp_path / "world", lambda m: None, progress=False)
    b = world_baselines(cfg.au_fold, world)
    lab = load_dataset("bp4d", world / "bp4d")
    _, test = split_fold(lab, cfg.au_fold, lab.attrs.get("protocol"))
    f1s = []
    for au in BP4D_AUS:
        coded = test[f"AU{au}"].dropna()
        p = float((coded == 1).mean())
        f1s.append(2 * p / (1 + p))  # precision p, recall 1
    assert b["au_all_positive_f1"] == pytest.approx(np.mean(f1s))
    wild = load_dataset("rafdb", world / "rafdb")
    majority = wild[wild.split == "train"].expression.value_counts().idxmax()
    assert b["fer_majority_class"] == majority
    test_wild = wild[wild.split == "test"]
    assert b["fer_majority_accuracy"] == pytest.approx((test_wild.expression == majority).mean())

    result = ReproduceResult(cfg, baselines=b)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text(json.dumps(result.to_dict()))
    from clef.experiments.reproduce import load_results

    loaded = load_results(tmp_path / "r")
    assert loaded.baselines == b and loaded.config == cfg  # tuples of the world config survive JSON
    report = write_report(loaded, tmp_path / "r").read_text()
    assert f"mean F1 **{100 * b['au_all_positive_f1']:.1f}**" in report
