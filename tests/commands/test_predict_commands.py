"""`clef predict`, `clef explain` and `clef embed` end to end on the tiny world (CPU)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clef.cli import main
from clef.synth.contrast import contrast_au
from clef.synth.identity import sample_identity
from clef.synth.render import Nuisance, render_face


def _crops(folder, n=4, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        face = render_face(sample_identity(rng, "lab"), contrast_au(k % 2 == 1, 0), Nuisance(), size)
        Image.fromarray(face).save(folder / f"{k:04d}.png")
    return folder


def test_predict_writes_rows_and_refuses_to_overwrite(tiny_au_model, tmp_path, capsys):
    crops = _crops(tmp_path / "S01" / "T1")
    labels = tmp_path / "labels.txt"
    labels.write_text("[group mouth]\nsmile = a smiling mouth\nneutral = a neutral mouth\n")
    out = tmp_path / "pred.csv"
    args = ["predict", str(tiny_au_model), str(tmp_path / "S01"), "--out", str(out), "--aligned"]
    opts = ["--labels", "raised brows", "--label-file", str(labels), "--workers", "0", "--quiet"]
    assert main([*args, *opts]) == 0
    printed = capsys.readouterr().out
    assert "predict: 4 files, 4 frames, 4 rows, 0 frames without a face" in printed
    rows = pd.read_csv(out)
    assert rows["source"].tolist() == [(crops / f"{k:04d}.png").as_posix() for k in range(4)]
    assert rows["frame"].tolist() == [0, 1, 2, 3]  # frame-tree file names are frame numbers
    assert list(rows.columns[-8:]) == [
        "raised_brows_cos", "raised_brows_prob", "raised_brows", "smile_cos", "smile_prob",
        "neutral_cos", "neutral_prob", "mouth",
    ]  # fmt: skip
    np.testing.assert_allclose(rows["smile_prob"] + rows["neutral_prob"], 1.0, atol=1e-6)
    side = json.loads((tmp_path / "pred.json").read_text())
    assert side["labels"][1]["groups"] == {"mouth": ["smile", "neutral"]}
    assert side["labels"][1]["templates"] == side["labels"][0]["name_templates"]

    assert main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists; pass --resume" in err
    assert main([*args, "--resume", "--quiet"]) == 2  # other labels than the output's
    assert "other columns than this run" in capsys.readouterr().err
    assert main([*args, *opts, "--resume"]) == 0
    # The last image is redone (its rows could have been cut short); the other three are kept.
    assert "1 files, 1 frames, 1 rows, 0 frames without a face, 0 unreadable files, 3 sources already" in (
        capsys.readouterr().out
    )
    assert len(pd.read_csv(out)) == 4


def test_a_bad_label_file_is_a_one_line_error(tiny_au_model, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("smile\n[group solo]\nonly one\n")
    code = main(
        ["predict", str(tiny_au_model), str(_crops(tmp_path / "in")), "--out", str(tmp_path / "p.csv")]
        + ["--aligned", "--label-file", str(labels), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{labels}, line 2: group 'solo' has 1 label" in err


def test_explain_writes_a_figure_and_arrays(tiny_au_model, tmp_path, capsys):
    rng = np.random.default_rng(1)
    face = render_face(sample_identity(rng, "lab"), contrast_au(True, 0), Nuisance(), 96)
    scene = np.full((160, 224, 3), 96, np.uint8)
    scene[30:126, 60:156] = face
    Image.fromarray(scene).save(tmp_path / "scene.png")
    out = tmp_path / "figs" / "smile"
    args = ["explain", str(tiny_au_model), str(tmp_path / "scene.png"), "--label", "AU12"]
    assert main([*args, "--text", "raised brows", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert '"a photo of a person with lip corner puller."' in printed and "attention relevance" in printed
    arrays = np.load(tmp_path / "figs" / "smile.npz")
    assert str(arrays["text_1"]) == "a photo of a person with raised brows."  # --label first, then --text
    assert arrays["heatmap_0"].shape == (32, 32) and (tmp_path / "figs" / "smile.png").stat().st_size > 5000
    assert (
        main(
            ["explain", str(tiny_au_model), str(tmp_path / "scene.png"), "--label", "AU99", "--out", str(out)]
        )
        == 2
    )
    assert "unknown label(s) AU99" in capsys.readouterr().err


def test_embed_writes_embeddings_in_record_order_and_a_tsne(tiny_au_model, tiny_world, tmp_path, capsys):
    from clef.data import load_dataset
    from clef.data.folds import test_selection
    from clef.embeddings import read_embeddings
    from clef.finetuned import load_finetuned
    from clef.inference import embed_images

    out = tmp_path / "emb"
    args = ["embed", str(tiny_au_model), "bp4d", str(tiny_world / "bp4d"), "--out", str(out), "--fold", "1"]
    assert main([*args, "--color-by", "activity", "--format", "safetensors", "--quiet"]) == 0
    assert "t-SNE of 64 points" in capsys.readouterr().out
    matrix, records = read_embeddings(out)
    expected, _ = test_selection(load_dataset("bp4d", tiny_world / "bp4d"), fold=1)
    assert records["path"].tolist() == expected["path"].tolist()
    model, _ = load_finetuned(tiny_au_model)
    np.testing.assert_allclose(matrix, embed_images(model.clef, expected, progress=False).numpy(), atol=1e-6)
    assert (out / "tsne.png").stat().st_size > 5000 and (out / "embeddings.safetensors").is_file()
    about = json.loads((out / "embeddings.json").read_text())
    assert about["rows"] == 64 and about["selection"] == "fold 1 test subjects"


def test_embed_says_which_columns_can_colour(tiny_au_model, tiny_world, tmp_path, capsys):
    args = ["embed", str(tiny_au_model), "rafdb", str(tiny_world / "rafdb"), "--out", str(tmp_path / "e")]
    assert main([*args, "--color-by", "subject", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--color-by subject: the records have 0 values; columns with values: expression" in err


@pytest.mark.parametrize("workers", [2])
def test_loader_workers_give_the_same_rows(tiny_au_model, tmp_path, workers):
    from clef.predict import PredictConfig, Predictor

    inputs = [_crops(tmp_path / "a", 5), _crops(tmp_path / "b", 3)]
    plain = Predictor(tiny_au_model, PredictConfig(aligned=True, batch_size=4), device="cpu").predict(inputs)
    config = PredictConfig(aligned=True, batch_size=4, workers=workers)
    parallel = Predictor(tiny_au_model, config, device="cpu").predict(inputs)
    key = ["source", "frame"]
    pd.testing.assert_frame_equal(
        parallel.sort_values(key).reset_index(drop=True), plain.sort_values(key).reset_index(drop=True)
    )
