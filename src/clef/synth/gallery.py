"""A contact sheet of the built-in world, to see what it looks like at a glance.

Rows: subjects at rest; each AU at intensity 3 on one subject; each emotion prototype; a strip of a
lab video over time; wild samples with their (possibly noisy) labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clef.labels import ALL_AUS
from clef.synth.emotions import EMOTIONS, prototype_vector
from clef.synth.export import render_video
from clef.synth.render import render_face
from clef.synth.world import ACTIVITIES, WorldConfig, lab_subjects, make_video, make_wild_image

_LABEL_HEIGHT = 14
_TITLE_WIDTH = 120


def gallery_rows(config: WorldConfig) -> list[tuple[str, list[tuple[np.ndarray, str]]]]:
    """(row title, [(image, caption), ...]) for each row of the sheet."""
    subjects = lab_subjects(config)
    rng = np.random.default_rng([config.seed, 99])
    rest = np.zeros(len(ALL_AUS))

    def still(subject, au, side=None):
        return render_face(subject.identity, au, subject.camera, config.size, side, rng)

    rows = [("subjects at rest", [(still(s, rest), s.sid) for s in subjects[:12]])]
    # Show AUs on the clearest faces: light skin, no glasses or beard (subtle AUs read best there).
    clear = sorted(
        subjects[:12],
        key=lambda s: (s.identity.glasses != "none", s.identity.beard != "none", -sum(s.identity.skin)),
    )
    aus = []
    for j, au in enumerate(ALL_AUS):
        vector = rest.copy()
        vector[j] = 3.0
        aus.append((still(clear[0], vector), f"AU{au}"))
    rows.append((f"each AU at 3 ({clear[0].sid})", aus))
    emotions = []
    for emotion in EMOTIONS:
        side = "left" if emotion == "contempt" else None
        emotions.append((still(clear[1], prototype_vector(emotion), side), emotion[:9]))
    rows.append((f"emotions ({clear[1].sid})", emotions))
    subject_index = 2 % len(subjects)
    video = make_video(
        config, subjects[subject_index], subject_index, ACTIVITIES[0], max(config.frames_per_video, 64)
    )
    images = render_video(video, config.size)
    strip = [(images[t], f"{video.frames[t]} {video.expression[t][:5]}") for t in range(0, 64, 4)]
    rows.append((f"video {video.subject.sid} {video.activity}", strip))
    wild = [make_wild_image(config, i) for i in range(14)]
    wild_images = []
    for item in wild:
        rng_item = np.random.default_rng([*item.seed_key, 2])
        image = render_face(item.identity, item.au, item.nuisance, config.size, item.unilateral, rng_item)
        wild_images.append((image, item.label[:9]))
    rows.append(("wild (label)", wild_images))
    return rows


def write_gallery(config: WorldConfig, path: Path, cell: int = 96) -> Path:
    """Render the contact sheet to ``path`` (PNG) and return it."""
    rows = gallery_rows(config)
    columns = max(len(items) for _, items in rows)
    width = _TITLE_WIDTH + columns * cell
    height = len(rows) * (cell + _LABEL_HEIGHT + 4)
    sheet = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for r, (title, items) in enumerate(rows):
        top = r * (cell + _LABEL_HEIGHT + 4)
        draw.text((6, top + cell // 2), title, fill=(20, 20, 20), font=font)
        for c, (image, caption) in enumerate(items):
            left = _TITLE_WIDTH + c * cell
            tile = Image.fromarray(image).resize((cell - 4, cell - 4), Image.Resampling.BICUBIC)
            sheet.paste(tile, (left + 2, top + 2))
            draw.text((left + 4, top + cell), caption, fill=(40, 40, 40), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
