"""Per-subject appearance of the synthetic world.

An :class:`Identity` fixes everything about a face that does not change from frame to frame: its
shape, colours, hair, accessories and *resting* asymmetries (a mouth that curves up or down at rest,
brows that sit high or low, one side a little different from the other). Real facial-behaviour data
has few subjects and identity is the loudest visual cue, so identities vary a lot more than the
expressions drawn on them.

Lengths are in the canonical face frame of :mod:`clef.synth.face` (the image spans [-1, 1] on both
axes, y grows downward); colours are RGB tuples of ints in 0..255.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clef.errors import UserError

DOMAINS: tuple[str, ...] = ("lab", "wild")
HAIR_STYLES: tuple[str, ...] = ("short", "long", "bald", "fringe", "bun", "curly")
BEARD_STYLES: tuple[str, ...] = ("none", "stubble", "full", "goatee")
GLASSES_STYLES: tuple[str, ...] = ("none", "round", "rect")

RGB = tuple[int, int, int]
# how common each of HAIR_STYLES is
_HAIR_STYLE_CDF = np.cumsum([0.26, 0.24, 0.08, 0.16, 0.1, 0.16])[:-1]

# Skin tones from very light to very dark; a subject's tone is interpolated along this ramp and
# then jittered in hue, so tones are continuous rather than a handful of classes.
_SKIN_RAMP = np.array(
    [
        [246, 214, 190],
        [234, 192, 160],
        [214, 164, 128],
        [186, 132, 96],
        [150, 100, 70],
        [110, 72, 50],
        [76, 50, 36],
    ],
    dtype=np.float64,
)
_HAIR_COLOURS = np.array(
    [
        [22, 18, 16],  # black
        [48, 32, 22],  # dark brown
        [92, 62, 38],  # brown
        [150, 110, 62],  # light brown
        [212, 176, 112],  # blonde
        [150, 66, 30],  # red
        [150, 146, 140],  # grey
        [222, 220, 214],  # white
    ],
    dtype=np.float64,
)
_IRIS_COLOURS = np.array(
    [
        [62, 38, 22],  # dark brown
        [110, 70, 36],  # brown
        [120, 100, 50],  # hazel
        [70, 110, 60],  # green
        [60, 100, 150],  # blue
        [110, 120, 130],  # grey
    ],
    dtype=np.float64,
)
# A lab records everyone in the same room: backdrops differ only a little between sessions, so the
# face itself (not the wall behind it) is what makes identity the loudest cue.
_LAB_BACKDROPS = np.array(
    [[58, 60, 66], [70, 72, 80], [84, 84, 86], [52, 58, 72], [96, 94, 90], [64, 62, 60]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class Identity:
    """Everything about one subject's face that stays fixed across frames.

    Shape fields are canonical-frame lengths; ``rest_*`` fields are resting offsets that mimic AUs
    (``rest_mouth_curve`` < 0 lifts the mouth corners like a faint AU12, > 0 drops them like AU15;
    ``rest_brow_height`` < 0 raises both brows; ``rest_brow_inner`` < 0 lifts the inner ends like AU1,
    > 0 lowers them like AU4; ``rest_lid`` > 0 opens the eyes like AU5, < 0 narrows them like AU7;
    ``asymmetry`` shifts the image-right brow and mouth corner up (< 0) or down (> 0)).
    """

    # head and face shape
    face_width: float  # half-width of the face at the cheekbones
    face_height: float  # half-height of the face (forehead top to chin)
    jaw: float  # 0 = pointed chin .. 1 = square jaw
    skin: RGB
    # hair
    hair_style: str
    hair_color: RGB
    hair_volume: float  # how far hair stands off the skull
    hairline: float  # y of the hairline at the centre (smaller = higher forehead)
    # eyes
    eye_size: float  # half-width of the eye opening
    eye_spacing: float  # x of each eye centre
    eye_y: float
    eye_open: float  # resting half-height of the opening above the eye axis, relative to eye_size
    eye_tilt: float  # how much higher the outer eye corner sits than the inner one
    iris_color: RGB
    # brows
    brow_arch: float
    brow_thickness: float
    brow_color: RGB
    brow_y: float  # resting height of the brow above the eye centre
    brow_length: float
    # nose
    nose_length: float
    nose_width: float
    # mouth
    mouth_width: float  # half-width, corner to centre
    mouth_y: float
    upper_lip: float  # thickness of the red of the upper lip
    lower_lip: float
    lip_color: RGB
    # accessories and marks
    glasses: str
    glasses_color: RGB
    beard: str
    freckles: float  # 0 = none .. 1 = many
    detail_seed: int  # seeds small details: freckle positions, hair parting, side of the bun
    # resting expression (see class docstring)
    rest_mouth_curve: float
    rest_brow_height: float
    rest_brow_inner: float
    rest_lid: float
    asymmetry: float
    age_lines: float  # resting depth of nasolabial folds and forehead lines, 0..1
    # surroundings that belong to the subject in a lab recording
    background: RGB
    shirt_color: RGB


def _rgb(values: np.ndarray) -> RGB:
    v = np.clip(np.rint(values), 0, 255).astype(int)
    return (int(v[0]), int(v[1]), int(v[2]))


def _ramp(ramp: np.ndarray, t: float) -> np.ndarray:
    pos = t * (len(ramp) - 1)
    i = min(int(pos), len(ramp) - 2)
    f = pos - i
    return ramp[i] * (1.0 - f) + ramp[i + 1] * f


def sample_identity(rng: np.random.Generator, domain: str = "lab") -> Identity:
    """Draw one subject.

    ``domain`` is ``"lab"`` (BP4D-like: a studio backdrop per subject) or ``"wild"`` (wider ranges of
    shape and accessories). Raises :class:`UserError` for another domain. Consumes a fixed number
    of draws from ``rng`` per call, so identities are reproducible from the generator state.
    """
    if domain not in DOMAINS:
        raise UserError(f"unknown domain {domain!r}; valid domains: {', '.join(DOMAINS)}")
    wide = 1.35 if domain == "wild" else 1.0
    u = rng.random(48)  # a fixed block of uniforms keeps the draw count independent of branches

    def rng_in(k: int, lo: float, hi: float, widen: bool = True) -> float:
        c, h = (lo + hi) / 2, (hi - lo) / 2
        if widen:
            h *= wide
        return float(c + (2 * u[k] - 1) * h)

    tone = float(u[0] ** 0.9)
    skin = _ramp(_SKIN_RAMP, tone) * np.array([1 + 0.05 * (u[1] - 0.5), 1.0, 1 - 0.08 * (u[2] - 0.5)])
    hair_idx = int(u[3] * len(_HAIR_COLOURS))
    if tone > 0.5 and hair_idx in (4, 5):  # light hair on dark skin is rare; keep it plausible
        hair_idx = 0
    hair = _HAIR_COLOURS[hair_idx] * (0.85 + 0.3 * u[4])
    style = HAIR_STYLES[int(np.searchsorted(_HAIR_STYLE_CDF, u[5], side="right"))]
    iris_idx = int(u[6] * len(_IRIS_COLOURS))
    if tone > 0.45:  # dark skin almost always comes with brown eyes
        iris_idx = int(u[6] * 2.4) % 2
    iris = _IRIS_COLOURS[iris_idx] * (0.85 + 0.3 * u[7])
    # brows follow the hair but stay a bit darker, except for very dark hair
    brow = hair * (0.7 + 0.2 * u[8]) if hair_idx not in (6, 7) else hair * 0.6
    # lips: redder and darker than the skin; the fixed offset keeps them visible on dark skin
    lip = skin * np.array([0.76, 0.5, 0.54]) + np.array([44.0, 6.0, 14.0]) * (0.8 + 0.4 * u[9])
    glasses_p = 0.25 if domain == "lab" else 0.3
    glasses = "none" if u[10] > glasses_p else GLASSES_STYLES[1 + int(u[11] * 2)]
    glasses_col = np.array([[20, 20, 20], [90, 60, 30], [160, 160, 170], [120, 20, 30]])[int(u[12] * 4)]
    beard = "none"
    if u[13] < 0.3 and style not in ("long", "bun"):  # a crude sex prior keeps beards plausible
        beard = BEARD_STYLES[1 + int(u[14] * 3)]
    freckles = float(max(0.0, u[15] * 1.6 - 1.0) / 0.6) if tone < 0.45 else 0.0
    backdrop = _LAB_BACKDROPS[int(u[16] * len(_LAB_BACKDROPS))] * (0.92 + 0.16 * u[17])
    shirt = np.array([40 + 180 * u[18], 40 + 180 * u[19], 40 + 180 * u[20]])
    return Identity(
        face_width=rng_in(21, 0.62, 0.78),
        face_height=rng_in(22, 0.90, 1.04),
        jaw=float(u[23]),
        skin=_rgb(skin),
        hair_style=style,
        hair_color=_rgb(hair),
        hair_volume=rng_in(24, 0.04, 0.14),
        hairline=rng_in(25, -0.74, -0.56),
        eye_size=rng_in(26, 0.115, 0.145),
        eye_spacing=rng_in(27, 0.25, 0.33),
        eye_y=rng_in(28, -0.20, -0.12),
        eye_open=rng_in(29, 0.40, 0.56),
        eye_tilt=rng_in(47, -0.01, 0.035),
        iris_color=_rgb(iris),
        brow_arch=rng_in(30, 0.0, 0.07),
        brow_thickness=rng_in(31, 0.035, 0.075),
        brow_color=_rgb(brow),
        brow_y=rng_in(32, 0.15, 0.21),
        brow_length=rng_in(33, 0.19, 0.26),
        nose_length=rng_in(34, 0.28, 0.38),
        nose_width=rng_in(35, 0.085, 0.13),
        mouth_width=rng_in(36, 0.17, 0.24),
        mouth_y=rng_in(37, 0.40, 0.48),
        upper_lip=rng_in(38, 0.030, 0.060),
        lower_lip=rng_in(39, 0.040, 0.075),
        lip_color=_rgb(lip),
        glasses=glasses,
        glasses_color=(int(glasses_col[0]), int(glasses_col[1]), int(glasses_col[2])),
        beard=beard,
        freckles=freckles,
        detail_seed=int(u[40] * 2**31),
        rest_mouth_curve=rng_in(41, -0.035, 0.035),
        rest_brow_height=rng_in(42, -0.03, 0.03),
        rest_brow_inner=rng_in(43, -0.03, 0.03),
        rest_lid=rng_in(44, -0.12, 0.12),
        asymmetry=rng_in(45, -0.015, 0.015),
        age_lines=float(u[46] ** 2),
        background=_rgb(backdrop),
        shirt_color=_rgb(shirt),
    )
