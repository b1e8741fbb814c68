"""`clef demo --quick` end to end on CPU: world, stage 1, CLEF and I for AU and FER, report + figures."""

from __future__ import annotations

import json

from clef.cli import main


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--quiet", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed and "AU mean F1" in printed and "FER accuracy" in printed
    report = (out / "report.md").read_text()
    assert "Synthetic numbers, not real-data results" in report
    assert "| label-blind (every AU present; always " in report
    for name in ("au_f1", "fer_confusion", "comparison", "tsne"):
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"figures/{name}.png" in report
    results = json.loads((out / "results.json").read_text())
    assert set(results["headline"]) == {
        "au_mean_f1_clef",
        "au_mean_f1_i",
        "fer_accuracy_clef",
        "fer_accuracy_i",
    }
    assert all(0.0 <= v <= 1.0 for v in results["headline"].values())
    assert len(results["au"]["CLEF"]["f1"]) == 12 and len(results["fer"]["I"]["confusion"]) == 7
    # CLEF started from the stage-1 checkpoint; the baseline from scratch with a linear head.
    clef_meta = json.loads((out / "runs" / "fer_CLEF" / "model.json").read_text())
    base_meta = json.loads((out / "runs" / "fer_I" / "model.json").read_text())
    assert (
        clef_meta["notes"]["stage2"]["head"] == "names" and base_meta["notes"]["stage2"]["head"] == "linear"
    )
    assert clef_meta["training_config"]["init"]["checkpoint"].endswith("stage1")
    assert base_meta["training_config"]["init"]["checkpoint"] is None
