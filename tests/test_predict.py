"""Prediction: column sets and sidecar, rows streamed to the file, resuming without duplicates, bad
inputs reported without losing rows, and the same metrics as `clef evaluate` on the world's test split."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import clef
from clef.checkpoint import read_metadata
from clef.cli import main
from clef.errors import UserError
from clef.labels import BP4D_AUS, RAFDB_CLASSES
from clef.predict import FIXED_COLUMNS, PredictConfig, Predictor
from clef.synth.contrast import contrast_au
from clef.synth.identity import sample_identity
from clef.synth.render import Nuisance, render_face

ALIGNED = PredictConfig(aligned=True, batch_size=8)


def _faces(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        render_face(sample_identity(rng, "lab"), contrast_au(k % 2 == 1, k % 3), Nuisance(), size)
        for k in range(n)
    ]


def _scene(face: np.ndarray, shift: int = 0, height: int = 160, width: int = 224) -> np.ndarray:
    """A face of ``face``'s size pasted on a grey frame (MTCNN needs context around it)."""
    frame = np.full((height, width, 3), 96, np.uint8)
    s = face.shape[0]
    frame[20 : 20 + s, 40 + shift : 40 + shift + s] = face
    return frame


def _write_video(path: Path, frames: list[np.ndarray], rate: int = 10) -> Path:
    av = pytest.importorskip("av", reason="videos need PyAV")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.bit_rate = 4_000_000  # little compression: MTCNN sees the faces as drawn
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _two_faces(faces: list[np.ndarray], k: int) -> np.ndarray:
    """Frame ``k`` of two faces drifting towards each other, one in each half of the frame."""
    frame = _scene(faces[0], k)
    frame[70:142, 140 - k : 212 - k] = faces[1]
    return frame


def _run_interrupted(predictor: Predictor, inputs: list, out: Path, monkeypatch, at: int) -> None:
    """``predictor.run`` stopped by Ctrl-C when video frame ``at`` is decoded."""
    import clef.predict as predict_module

    real = predict_module.video_frames

    def interrupted(*args, **kwargs):
        for frame in real(*args, **kwargs):
            if frame.index == at:
                raise KeyboardInterrupt
            yield frame

    with monkeypatch.context() as patch:
        patch.setattr(predict_module, "video_frames", interrupted)
        with pytest.raises(KeyboardInterrupt):
            predictor.run(inputs, out)


@pytest.fixture(scope="module")
def crop_video(tmp_path_factory) -> Path:
    """60 frames of 32 px aligned faces (the tiny models' input size), 10 frames/s."""
    faces = _faces(6, 32)
    return _write_video(tmp_path_factory.mktemp("video") / "crops.mp4", [faces[k // 10] for k in range(60)])


def test_columns_of_an_au_model(tiny_au_model):
    predictor = Predictor(tiny_au_model, ALIGNED, device="cpu")
    expected = list(FIXED_COLUMNS) + [c for a in BP4D_AUS for c in (f"AU{a}_prob", f"AU{a}")]
    assert predictor.columns == expected
    assert FIXED_COLUMNS[:4] == ("source", "frame", "time", "face")
    assert FIXED_COLUMNS[4:9] == ("x1", "y1", "x2", "y2", "confidence")
    assert FIXED_COLUMNS[9:] == tuple(
        f"{p}_{a}" for p in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right") for a in "xy"
    )


def test_columns_of_an_fer_model_with_and_without_its_labels(tiny_fer_model):
    predictor = Predictor(tiny_fer_model, ALIGNED, device="cpu")
    assert predictor.columns == list(FIXED_COLUMNS) + [f"{c}_prob" for c in RAFDB_CLASSES] + ["expression"]
    mine = Predictor(tiny_fer_model, ALIGNED, labels=["a wide smile", "happiness"], device="cpu")
    assert mine.columns[-6:] == [
        "a_wide_smile_cos", "a_wide_smile_prob", "a_wide_smile",
        "happiness_2_cos", "happiness_2_prob", "happiness_2",
    ]  # fmt: skip
    only = Predictor(
        tiny_fer_model, PredictConfig(aligned=True, only_labels=True), labels=["a smile"], device="cpu"
    )
    assert only.columns == list(FIXED_COLUMNS) + ["a_smile_cos", "a_smile_prob", "a_smile"]
    with pytest.raises(UserError, match="only_labels needs"):
        Predictor(tiny_fer_model, PredictConfig(only_labels=True), device="cpu")


def test_sidecar_names_labels_thresholds_model_and_preprocessing(tiny_au_model, tmp_path):
    images = []
    for k, face in enumerate(_faces(3, 32)):
        images.append(tmp_path / f"{k}.png")
        Image.fromarray(face).save(images[-1])
    out = tmp_path / "pred.csv"
    summary = Predictor(tiny_au_model, ALIGNED, device="cpu").run(images, out)
    side = json.loads((tmp_path / "pred.json").read_text())
    header = out.read_text().splitlines()[0].split(",")
    assert side["columns"] == header and side["format"] == "clef-predictions"
    assert side["clef_version"] == clef.__version__ and side["status"] == "finished"
    model_json = Path(str(tiny_au_model) + ".json")
    assert side["model"]["sidecar_sha256"] == hashlib.sha256(model_json.read_bytes()).hexdigest()
    assert side["model"]["created"] == read_metadata(tiny_au_model)["created"]
    assert side["model"]["path"] == str(model_json.resolve())
    trained = side["labels"][0]
    assert trained["kind"] == "trained" and trained["labels"] == [f"AU{a}" for a in BP4D_AUS]
    assert trained["thresholds"] == {f"AU{a}": 0.5 for a in BP4D_AUS}
    assert trained["names"][BP4D_AUS.index(12)] == "lip corner puller"
    assert side["preprocessing"]["model_input"]["size"] == 32 and "aligned" in side["preprocessing"]["faces"]
    assert side["counts"] == {"files": 3, "frames": 3, "rows": 3, "frames_without_face": 0, "failed_files": 0}
    assert summary.rows == 3 and side["skipped"] == []


def _frames_in(path: Path) -> list[int]:
    return pd.read_csv(path)["frame"].tolist()


def test_rows_reach_the_file_while_a_long_video_is_still_decoding(
    tiny_au_model, crop_video, tmp_path, monkeypatch
):
    import clef.predict as predict_module

    out = tmp_path / "stream.csv"
    seen: dict[int, int] = {}
    real = predict_module.video_frames

    def watched(*args, **kwargs):
        for frame in real(*args, **kwargs):
            if frame.index in (0, 40):
                seen[frame.index] = len(out.read_text().splitlines()) - 1 if out.exists() else -1
            yield frame

    monkeypatch.setattr(predict_module, "video_frames", watched)
    Predictor(tiny_au_model, ALIGNED, device="cpu").run([crop_video], out)
    # When frame 40 was decoded, the first 5 batches of 8 frames were already in the file.
    assert seen == {0: 0, 40: 40}
    assert _frames_in(out) == list(range(60))


def test_resume_appends_only_the_missing_frames(tiny_au_model, crop_video, tmp_path, monkeypatch):
    full = tmp_path / "full.csv"
    Predictor(tiny_au_model, ALIGNED, device="cpu").run([crop_video], full)
    out = tmp_path / "resumed.csv"
    _run_interrupted(Predictor(tiny_au_model, ALIGNED, device="cpu"), [crop_video], out, monkeypatch, at=30)
    assert _frames_in(out) == list(range(24))  # three whole batches reached the disk
    assert json.loads((tmp_path / "resumed.json").read_text())["status"] == "interrupted"
    with open(out, "a") as f:  # a crash in the middle of a row
        f.write("crops.mp4,24,2.4,0,,,")
    with pytest.raises(UserError, match="exists; pass --resume"):
        Predictor(tiny_au_model, ALIGNED, device="cpu").run([crop_video], out)
    with pytest.raises(UserError, match="other settings than this run"):
        Predictor(tiny_au_model, PredictConfig(aligned=True, frame_step=2), device="cpu").run(
            [crop_video], out, resume=True
        )
    summary = Predictor(tiny_au_model, ALIGNED, device="cpu").run([crop_video], out, resume=True)
    assert summary.resumed_sources == 1 and summary.frames == 37  # frame 23 redone, then 24..59
    resumed, reference = pd.read_csv(out), pd.read_csv(full)
    assert resumed["frame"].tolist() == list(range(60))
    pd.testing.assert_frame_equal(resumed, reference, check_exact=False, rtol=1e-5)
    assert json.loads((tmp_path / "resumed.json").read_text())["status"] == "finished"
    # Resuming a finished video decodes nothing new.
    again = Predictor(tiny_au_model, ALIGNED, device="cpu").run([crop_video], out, resume=True)
    assert again.frames == 0 and _frames_in(out) == list(range(60))


def test_frame_step_and_time_window(tiny_au_model, crop_video):
    config = PredictConfig(aligned=True, batch_size=8, frame_step=3, start=1.0, end=3.0)
    rows = Predictor(tiny_au_model, config, device="cpu").predict([crop_video])
    assert rows["frame"].tolist() == [12, 15, 18, 21, 24, 27, 30]  # multiples of 3 within 1-3 s at 10 fps
    np.testing.assert_allclose(rows["time"], rows["frame"] / 10.0)


def test_bad_inputs_are_reported_and_rows_already_written_stay(tiny_au_model, tmp_path, monkeypatch):
    import clef.predict as predict_module

    folder = tmp_path / "in"
    folder.mkdir()
    faces = _faces(3, 96)
    Image.fromarray(_scene(faces[0])).save(folder / "a_face.png")
    (folder / "b_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    Image.fromarray(np.full((160, 224, 3), 96, np.uint8)).save(folder / "c_blank.png")
    clip = _write_video(tmp_path / "clip.mp4", [_scene(faces[1], 2 * k) for k in range(6)])
    data = clip.read_bytes()
    (folder / "d_truncated.mp4").write_bytes(data[: len(data) // 2])
    (folder / "e_fails_midway.mp4").write_bytes(data)
    real = predict_module.video_frames

    def midway(path, *args, **kwargs):
        for frame in real(path, *args, **kwargs):
            if Path(path).name.startswith("e_") and frame.index == 4:
                raise UserError(f"cannot decode video {path} at frame 4: broken packet")
            yield frame

    monkeypatch.setattr(predict_module, "video_frames", midway)
    out = tmp_path / "pred.csv"
    summary = Predictor(tiny_au_model, PredictConfig(batch_size=4), device="cpu").run([folder], out)
    rows = pd.read_csv(out)
    sources = {Path(s).name for s in rows["source"]}
    assert sources == {"a_face.png", "e_fails_midway.mp4"}
    assert rows[rows["source"].str.endswith("e_fails_midway.mp4")]["frame"].tolist() == [0, 1, 2, 3]
    assert rows["confidence"].min() > 0.7 and rows["x1"].notna().all()  # O-Net threshold
    skipped = {Path(s["source"]).name: s for s in json.loads((tmp_path / "pred.json").read_text())["skipped"]}
    assert set(skipped) == {"b_corrupt.jpg", "c_blank.png", "d_truncated.mp4", "e_fails_midway.mp4"}
    assert skipped["b_corrupt.jpg"]["reason"].startswith("cannot read image")
    assert skipped["c_blank.png"] == {
        "source": str(folder / "c_blank.png"),
        "reason": "no face found",
        "frames": [[0, 0]],
    }
    assert "cannot open video" in skipped["d_truncated.mp4"]["reason"]
    assert "at frame 4" in skipped["e_fails_midway.mp4"]["reason"]
    assert (summary.failed_files, summary.frames_without_face, summary.rows) == (3, 1, 5)


def test_frames_without_a_face_are_runs_and_face_ids_follow_tracks(tiny_au_model, tmp_path):
    faces = _faces(2, 72)
    frames = []
    for k in range(12):
        if 4 <= k < 7:
            frames.append(np.full((160, 224, 3), 96, np.uint8))  # the subjects leave the picture
        else:
            frames.append(_two_faces(faces, k))
    clip = _write_video(tmp_path / "two.mp4", frames)
    config = PredictConfig(batch_size=4, all_faces=True)
    rows = Predictor(tiny_au_model, config, device="cpu").predict([clip])
    assert rows.attrs["skipped"] == [{"source": str(clip), "reason": "no face found", "frames": [[4, 6]]}]
    assert sorted(set(rows["frame"])) == [0, 1, 2, 3, 7, 8, 9, 10, 11]
    before, after = rows[rows["frame"] < 4], rows[rows["frame"] > 6]
    for part in (before, after):
        left = set(part[part["x1"] < 112]["face"])
        right = set(part[part["x1"] >= 112]["face"])
        assert len(left) == 1 and len(right) == 1 and left != right
    # After a gap of 3 frames (within the tracker's 15) the faces keep their ids.
    assert set(before["face"]) == set(after["face"]) == {0, 1}


def _f1(pred: np.ndarray, target: np.ndarray) -> float:
    tp = float((pred & target).sum())
    return 0.0 if tp == 0 else 2 * tp / (pred.sum() + target.sum())


def test_predict_on_the_test_split_reproduces_evaluate(tiny_au_model, tiny_world, tmp_path):
    from clef.data import load_dataset
    from clef.data.folds import test_selection
    from clef.data.records import au_targets
    from clef.finetuned import load_finetuned
    from clef.inference import predict

    out = tmp_path / "eval"
    args = ["evaluate", str(tiny_au_model), "--dataset", "bp4d", "--root", str(tiny_world / "bp4d")]
    assert main([*args, "--fold", "1", "--out", str(out), "--quiet"]) == 0
    evaluated = json.loads((out / "au_f1.json").read_text())
    records, _ = test_selection(load_dataset("bp4d", tiny_world / "bp4d"), fold=1)
    rows = Predictor(tiny_au_model, PredictConfig(aligned=True, batch_size=256), device="cpu").predict(
        records["path"].tolist()
    )
    rows = rows.set_index("source").loc[records["path"]]
    targets, mask = au_targets(records, BP4D_AUS)
    f1 = []
    for j, a in enumerate(BP4D_AUS):
        coded = mask[:, j]
        f1.append(_f1(rows[f"AU{a}"].to_numpy()[coded] == 1, targets[coded, j] == 1))
    assert f1 == evaluated["f1"]
    model, _ = load_finetuned(tiny_au_model)
    reference = predict(model, records, batch_size=256, progress=False).probabilities
    probabilities = rows[[f"AU{a}_prob" for a in BP4D_AUS]].to_numpy()
    np.testing.assert_allclose(probabilities, reference, rtol=1e-6, atol=1e-7)


def test_predict_reproduces_evaluate_for_expressions(tiny_fer_model, tiny_world, tmp_path):
    from clef.data import load_dataset

    out = tmp_path / "eval"
    args = ["evaluate", str(tiny_fer_model), "--dataset", "rafdb", "--root", str(tiny_world / "rafdb")]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    evaluated = json.loads((out / "fer.json").read_text())
    records = load_dataset("rafdb", tiny_world / "rafdb")
    records = records[records["split"] == "test"]
    rows = Predictor(tiny_fer_model, PredictConfig(aligned=True, batch_size=256), device="cpu").predict(
        records["path"].tolist()
    )
    rows = rows.set_index("source").loc[records["path"]]
    accuracy = float((rows["expression"].to_numpy() == records["expression"].to_numpy()).mean())
    assert accuracy == evaluated["accuracy"]
    np.testing.assert_allclose(rows[[f"{c}_prob" for c in RAFDB_CLASSES]].sum(axis=1), 1.0, atol=1e-5)


def test_python_api_takes_arrays_and_streams(tiny_au_model):
    predictor = clef.Predictor(tiny_au_model, ALIGNED, device="cpu")
    faces = _faces(5, 32)
    table = predictor.predict([faces[0], faces[1][:, :, 0]])  # RGB and greyscale arrays
    assert table["source"].tolist() == ["array:0", "array:1"] and list(table.columns) == predictor.columns
    parts = list(predictor.stream(iter(faces * 4), fps=5.0))
    assert [len(p) for p in parts] == [8, 8, 4]
    streamed = pd.concat(parts, ignore_index=True)
    assert streamed["frame"].tolist() == list(range(20))
    np.testing.assert_allclose(streamed["time"], np.arange(20) / 5.0)
    # The same face scores the same from a file list, an array list or a stream.
    np.testing.assert_allclose(streamed["AU12_prob"][0], table["AU12_prob"][0], rtol=1e-5)
    np.testing.assert_allclose(streamed["AU12_prob"][5], streamed["AU12_prob"][0], rtol=1e-5)
    with pytest.raises(UserError, match="uint8 image"):
        predictor.predict([np.zeros((4, 4, 3), np.float32)])


def test_parquet_output_resumes_too(tiny_au_model, crop_video, tmp_path):
    pytest.importorskip("pyarrow", reason="Parquet output needs pyarrow (optional)")
    out = tmp_path / "pred.parquet"
    Predictor(tiny_au_model, ALIGNED, device="cpu").run([crop_video], out)
    table = pd.read_parquet(out)
    assert table["frame"].tolist() == list(range(60)) and list(table.columns)[:4] == [
        "source",
        "frame",
        "time",
        "face",
    ]
    again = Predictor(tiny_au_model, ALIGNED, device="cpu").run([crop_video], out, resume=True)
    assert again.frames == 0 and len(pd.read_parquet(out)) == 60


def test_parquet_without_pyarrow_says_how_to_get_it(tiny_au_model, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(UserError, match="pip install pyarrow"):
        Predictor(tiny_au_model, ALIGNED, device="cpu").run([_faces(1, 32)[0]], tmp_path / "x.parquet")


def test_a_resumed_video_keeps_its_face_ids(tiny_au_model, tmp_path, monkeypatch):
    faces = _faces(2, 72)
    clip = _write_video(tmp_path / "two.mp4", [_two_faces(faces, k) for k in range(10)])
    config = PredictConfig(batch_size=2, all_faces=True)
    full = Predictor(tiny_au_model, config, device="cpu").predict([clip])
    out = tmp_path / "two.csv"
    _run_interrupted(Predictor(tiny_au_model, config, device="cpu"), [clip], out, monkeypatch, at=6)
    Predictor(tiny_au_model, config, device="cpu").run([clip], out, resume=True)
    resumed = pd.read_csv(out)
    key = ["frame", "face"]
    assert resumed[key].values.tolist() == full[key].values.tolist()  # same ids, no duplicates
    np.testing.assert_allclose(resumed["x1"], full["x1"], atol=0.01)


def test_import_clef_stays_cheap():
    import subprocess
    import sys

    code = (
        "import sys, clef; assert 'torch' not in sys.modules; clef.Predictor; assert 'torch' in sys.modules"
    )
    src = str(Path(clef.__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": src, "PATH": ""})
