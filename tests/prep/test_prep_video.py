import csv
import sys

import numpy as np
import pytest
from PIL import Image

from clef.errors import UserError
from clef.prep.pipeline import PrepConfig, run_prep
from clef.prep.sources import iter_video


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_two_face_video(path, astronaut, frames=8):
    """A small MPEG-4 clip: two copies of the astronaut's face drifting in opposite directions."""
    av = pytest.importorskip("av", reason="video decoding needs the optional PyAV extra (pip install av)")
    face = np.asarray(Image.fromarray(astronaut).resize((256, 256)))[20:100, 80:150]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 192, "yuv420p"
        for i in range(frames):
            frame = np.full((192, 320, 3), 90, np.uint8)
            frame[40 + i : 120 + i, 20 + 2 * i : 90 + 2 * i] = face
            frame[60:140, 200 - 2 * i : 270 - 2 * i] = face[:, ::-1]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_decodes_and_faces_keep_their_track_ids(tmp_path, astronaut, detector):
    (tmp_path / "videos").mkdir()
    write_two_face_video(tmp_path / "videos" / "clip.mp4", astronaut)
    assert [i for i, _ in iter_video(tmp_path / "videos" / "clip.mp4", step=3)] == [0, 3, 6]
    out = tmp_path / "out"
    summary = run_prep(
        tmp_path / "videos", out, PrepConfig(all_faces=True, batch_size=3), detector=detector, progress=False
    )
    assert (summary.frames, summary.faces, summary.misses) == (8, 16, 0)
    rows = read_csv(out / "manifest.csv")
    # The face on the left keeps one id through all frames, the one on the right the other.
    left = {r["track_id"] for r in rows if float(r["x1"]) < 160}
    right = {r["track_id"] for r in rows if float(r["x1"]) >= 160}
    assert len(left) == 1 and len(right) == 1 and left != right
    for r in rows:
        assert r["crop"] == f"clip/{int(r['frame']):06d}_t{r['track_id']}.jpg" and (out / r["crop"]).is_file()
    # Largest-face mode: one crop per frame, named by frame.
    single = run_prep(
        tmp_path / "videos", tmp_path / "out1", PrepConfig(frame_step=2), detector=detector, progress=False
    )
    assert single.faces == 4
    assert sorted(r["crop"] for r in read_csv(tmp_path / "out1" / "manifest.csv"))[0] == "clip/000000.jpg"


def test_undecodable_video_is_an_error_naming_it_or_a_counted_skip(tmp_path, astronaut, detector):
    pytest.importorskip("av", reason="video decoding needs the optional PyAV extra (pip install av)")
    (tmp_path / "videos").mkdir()
    write_two_face_video(tmp_path / "good.mp4", astronaut, frames=3)
    data = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "videos" / "broken.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "videos" / "good.mp4").write_bytes(data)
    with pytest.raises(UserError, match="cannot .* video .*broken.mp4"):
        run_prep(tmp_path / "videos", tmp_path / "out", detector=detector, progress=False)
    summary = run_prep(
        tmp_path / "videos", tmp_path / "out", PrepConfig(on_error="skip"), detector=detector, progress=False
    )
    assert [s for s, _ in summary.skipped] == ["broken.mp4"] and summary.items_processed == 1


def test_missing_video_extra_gives_install_hint(tmp_path, monkeypatch, detector):
    (tmp_path / "clip.mp4").write_bytes(b"not really a video")
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(UserError, match="pip install"):
        run_prep(tmp_path / "clip.mp4", tmp_path / "out", detector=detector, progress=False)


def test_iou_tracker_links_overlapping_boxes_and_retires_stale_tracks():
    import torch

    from clef.prep.pipeline import IoUTracker

    tracker = IoUTracker(min_iou=0.3, max_gap=2)
    a, b = [0.0, 0, 10, 10], [50.0, 50, 60, 60]
    assert tracker.update(torch.tensor([a, b]), frame=0) == [0, 1]
    # order of detections does not matter; small motion keeps the id
    assert tracker.update(torch.tensor([[51.0, 50, 61, 60], [1.0, 0, 11, 10]]), frame=1) == [1, 0]
    assert tracker.update(torch.zeros(0, 4), frame=2) == []
    assert tracker.update(torch.tensor([[2.0, 0, 12, 10]]), frame=3) == [0]  # gap of 2 frames: same track
    assert tracker.update(torch.tensor([[52.0, 50, 62, 60]]), frame=7) == [
        2
    ]  # too stale: new id, never reused


def test_video_frames_carry_times_and_honour_the_window(tmp_path, astronaut):
    from clef.prep.sources import video_frames

    write_two_face_video(tmp_path / "clip.mp4", astronaut, frames=8)  # 10 frames/s
    frames = list(video_frames(tmp_path / "clip.mp4"))
    assert [f.index for f in frames] == list(range(8))
    assert [round(f.time, 3) for f in frames] == [k / 10 for k in range(8)]
    window = list(video_frames(tmp_path / "clip.mp4", step=2, start=0.15, end=0.5))
    assert [f.index for f in window] == [2, 4]
    later = list(video_frames(tmp_path / "clip.mp4", first_index=5))
    assert [f.index for f in later] == [5, 6, 7] and later[0].rgb.shape == (192, 320, 3)
    assert list(video_frames(tmp_path / "clip.mp4", start=5.0)) == []  # nothing in the window is no error
