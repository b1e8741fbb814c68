"""Emotions as AU configurations, with per-frame variability.

Prototypes follow the EMFACS / FACS Investigator's Guide predictions (Ekman, Friesen & Hager 2002)
and the pain (Prkachin 1992) and embarrassment (Keltner 1995) literature:

=============  =============================================================================
happiness      6 + 12 (often 25; 26 when laughing)
sadness        1 + 4 + 15 (often 17)
surprise       1 + 2 + 5 + 26 (25 with the open mouth)
fear           1 + 2 + 4 + 5 + 20 (+ 7, 25/26)
anger          4 + 5 + 7 + 23 (often 24, 17)
disgust        9 and/or 10 (+ 4, 17, 25)
contempt       unilateral 12 + 14
pain           4 + 6/7 + 9/10 (+ 20, 25)
embarrassment  controlled smile: 12 with 24 (+ 6, 14, 17), gaze aversion not rendered
neutral        no AU
=============  =============================================================================

Each AU of a prototype has a typical apex intensity (FACS A-E as 1-5) and a probability of being
shown, so frames miss some AUs, carry extra ones, and vary in intensity.
"""

from __future__ import annotations

import numpy as np

from clef.labels import ALL_AUS

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "sadness",
    "surprise",
    "fear",
    "anger",
    "disgust",
    "contempt",
    "pain",
    "embarrassment",
)

# emotion -> {AU: (typical apex intensity, probability the AU is shown)}
PROTOTYPES: dict[str, dict[int, tuple[float, float]]] = {
    "neutral": {},
    "happiness": {6: (3.0, 0.85), 12: (3.6, 1.0), 25: (2.5, 0.55), 26: (2.0, 0.2)},
    "sadness": {1: (3.2, 0.95), 4: (2.8, 0.9), 15: (3.2, 0.9), 17: (2.6, 0.6), 24: (2.0, 0.2)},
    "surprise": {1: (3.6, 0.95), 2: (3.6, 0.95), 5: (3.2, 0.85), 25: (3.0, 0.9), 26: (3.4, 0.85)},
    "fear": {
        1: (3.2, 0.9),
        2: (2.8, 0.8),
        4: (2.8, 0.85),
        5: (3.6, 0.9),
        7: (2.0, 0.4),
        20: (3.2, 0.85),
        25: (2.8, 0.8),
        26: (2.2, 0.4),
    },
    "anger": {4: (3.6, 1.0), 5: (2.4, 0.5), 7: (3.2, 0.85), 23: (3.2, 0.85), 24: (2.8, 0.5), 17: (2.2, 0.4)},
    "disgust": {9: (3.4, 0.8), 10: (3.2, 0.85), 4: (2.2, 0.5), 6: (1.8, 0.3), 17: (2.4, 0.5), 25: (2.0, 0.3)},
    "contempt": {12: (2.8, 1.0), 14: (2.8, 0.9)},
    "pain": {
        4: (3.2, 0.9),
        6: (3.0, 0.8),
        7: (3.6, 0.9),
        9: (2.6, 0.6),
        10: (2.8, 0.7),
        20: (2.2, 0.4),
        25: (2.2, 0.5),
    },
    "embarrassment": {12: (2.8, 0.95), 24: (2.8, 0.85), 6: (1.8, 0.4), 14: (2.0, 0.4), 17: (2.0, 0.3)},
}
UNILATERAL_EMOTIONS = frozenset({"contempt"})

_AU_INDEX = {au: i for i, au in enumerate(ALL_AUS)}
_EXTRA_AU_PROBABILITY = 0.15


def sample_expression(
    emotion: str, rng: np.random.Generator, strength: float = 1.0
) -> tuple[np.ndarray, str | None]:
    """Sample an apex AU configuration of ``emotion``.

    Returns ``(au, unilateral)``: ``au`` float (17,) intensities in [0, 5] ordered as
    :data:`clef.labels.ALL_AUS`; ``unilateral`` is "left"/"right" for one-sided expressions (contempt)
    else None. ``strength`` scales all intensities (a subject's expressivity times the moment's).
    """
    if emotion not in PROTOTYPES:
        raise ValueError(f"unknown emotion {emotion!r}; valid: {', '.join(EMOTIONS)}")
    au = np.zeros(len(ALL_AUS))
    for unit, (apex, probability) in PROTOTYPES[emotion].items():
        if rng.random() < probability:
            au[_AU_INDEX[unit]] = apex * strength * rng.lognormal(0.0, 0.22)
    if emotion != "neutral" and rng.random() < _EXTRA_AU_PROBABILITY:
        au[rng.integers(len(ALL_AUS))] += rng.uniform(1.0, 2.5)
    unilateral = ("left", "right")[int(rng.integers(2))] if emotion in UNILATERAL_EMOTIONS else None
    return np.clip(au, 0.0, 5.0), unilateral


def prototype_vector(emotion: str) -> np.ndarray:
    """The typical apex intensities of ``emotion`` as a (17,) vector (every AU shown)."""
    au = np.zeros(len(ALL_AUS))
    for unit, (apex, _) in PROTOTYPES[emotion].items():
        au[_AU_INDEX[unit]] = apex
    return au
