"""A contrast set: faces in which a lower-face AU and upper-face AUs vary independently.

The built-in world's lab videos show AUs in emotion-shaped combinations, at the rates of their
activities; a model that scores "lip corner puller" from the brows would not be caught there. In
this set every identity is rendered frontally (no pose, lighting or noise: the AUs are the only
change) six times: AU12 off / on, crossed with the brows at rest, raised (AU1 + AU2) or lowered
(AU4), all at one intensity. Half the images smile whatever the brows do, so a model can only learn
AU12 from the mouth and AU1/AU2/AU4 from the brows; the geometry of every face is known, so a
relevance map can be checked against where the AU acts (:mod:`clef.explain`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clef.data.records import make_records
from clef.synth.face import AU_INDEX
from clef.synth.identity import sample_identity
from clef.synth.render import Nuisance, render_face

__all__ = ["CONTRAST_AUS", "contrast_au", "write_contrast_set"]

CONTRAST_AUS = (1, 2, 4, 12)
# brows: at rest, raised (inner + outer brow raiser), lowered (brow lowerer)
_BROWS = ({}, {1: 1.0, 2: 1.0}, {4: 1.0})


def contrast_au(smile: bool, brows: int, intensity: float = 4.0) -> np.ndarray:
    """The (17,) AU intensities of one contrast face: AU12 if ``smile``; ``brows`` 0 at rest, 1 raised,
    2 lowered."""
    au = np.zeros(len(AU_INDEX))
    for number, weight in {12: float(smile), **_BROWS[brows]}.items():
        au[AU_INDEX[number]] = weight * intensity
    return au


def write_contrast_set(
    out: str | Path, identities: int, size: int = 32, seed: int = 0, intensity: float = 4.0
) -> pd.DataFrame:
    """Render ``identities`` × 6 PNG faces into ``out`` and return their record table (``AU1``, ``AU2``,
    ``AU4``, ``AU12`` coded 0/1 everywhere, ``subject`` = ``C<k>``, dataset ``contrast``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 7])
    columns: dict[str, list] = {"path": [], "subject": [], **{f"AU{a}": [] for a in CONTRAST_AUS}}
    for k in range(identities):
        identity = sample_identity(rng, "lab")
        for smile in (False, True):
            for brows in range(len(_BROWS)):
                au = contrast_au(smile, brows, intensity)
                path = out / f"C{k:04d}_{int(smile)}{brows}.png"
                Image.fromarray(render_face(identity, au, Nuisance(), size)).save(path)
                columns["path"].append(str(path))
                columns["subject"].append(f"C{k}")
                for a in CONTRAST_AUS:
                    columns[f"AU{a}"].append(float(au[AU_INDEX[a]] > 0))
    return make_records({"dataset": "contrast", **columns}, len(columns["path"]))
