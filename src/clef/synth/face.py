"""FACS action units as landmark geometry in a canonical face frame.

Frame: the rendered crop spans [-1, 1] on both axes before per-frame nuisances; x grows to the
image right, **y grows downward** (image convention), so "raised" means a smaller y. Per-side arrays
have a leading axis of 2 ordered ``[image-left, image-right]``; the image-left half (x < 0) is the
subject's *right* side. ``unilateral="left"`` therefore acts on the subject's left = image-right half
(FACS notation L12), ``"right"`` on the image-left half.

Every AU is a local, continuous displacement (or wrinkle strength) linear in its intensity
``a = clip(au, 0, 5) / 5`` (FACS A..E ~ 1..5); displacements of different AUs add, lid openings and
lip thicknesses multiply, so combinations (6+12, 25+26, 1+2+5+26, 4+5+7+23) stay sensible. The
magnitudes are chosen so that intensity 2 moves a landmark by at least about one pixel at 64x64
(one canonical unit = 32 pixels there).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from clef.errors import UserError
from clef.labels import ALL_AUS
from clef.synth.identity import Identity

AU_INDEX: dict[int, int] = {au: i for i, au in enumerate(ALL_AUS)}
UNILATERAL_CHOICES: tuple[str | None, ...] = (None, "left", "right")

N_BROW = 5  # brow centre line points, inner -> outer
N_LID = 7  # lid points, inner corner -> outer corner
N_LIP = 11  # lip contour points, image-left corner -> image-right corner
N_OUTLINE = 40  # head outline points

_SIDE = np.array([-1.0, 1.0])  # x sign of [image-left, image-right]
_T_BROW = np.linspace(0.0, 1.0, N_BROW)
_U_LID = np.linspace(-1.0, 1.0, N_LID)  # -1 = inner corner, +1 = outer corner
_U_LIP = np.linspace(-1.0, 1.0, N_LIP)
_LIP_OPEN = (1.0 - _U_LIP**2) ** 0.6
_LIP_LOWER = (1.0 - _U_LIP**2) ** 0.55
_LIP_BOW = np.sqrt(1.0 - _U_LIP**2) * (
    1.0 + 0.3 * np.exp(-(((np.abs(_U_LIP) - 0.3) / 0.16) ** 2)) - 0.25 * np.exp(-((_U_LIP / 0.12) ** 2))
)
_LIP_CURVE = np.abs(_U_LIP) ** 1.8
_LIP_CENTRE = 1.0 - _U_LIP**4
_LIP_LEFT = _U_LIP < 0
_PHI = np.linspace(0.0, 2.0 * np.pi, N_OUTLINE, endpoint=False)  # 0 = image right, pi/2 = chin


@dataclass(frozen=True)
class Geometry:
    """Named landmarks of one face (canonical frame, see the module docstring) and wrinkle strengths.

    Point arrays end in an (x, y) axis. Strength scalars are >= 0 and roughly in [0, 1.5]; 0 means
    the line is not drawn. Arrays that depend on the identity only are shared between calls and
    read-only; copy before modifying.
    """

    outline: np.ndarray  # (N_OUTLINE, 2) head outline, closed polygon; index N_OUTLINE//4 is the chin
    chin: np.ndarray  # (2,)
    face_centre: np.ndarray  # (2,) centre of the outline ellipse
    ears: np.ndarray  # (2, 2) ear centres
    brows: np.ndarray  # (2, N_BROW, 2) brow centre lines, inner -> outer
    brow_thickness: np.ndarray  # (2, N_BROW)
    eye_upper: np.ndarray  # (2, N_LID, 2) upper lid margin, inner -> outer corner
    eye_lower: np.ndarray  # (2, N_LID, 2) lower lid margin
    lid_crease: np.ndarray  # (2, N_LID, 2) upper-lid fold above the margin
    iris_centre: np.ndarray  # (2, 2)
    iris_radius: float
    cheeks: np.ndarray  # (2, 2) cheek apex (raised by AU6)
    lid_bulge: np.ndarray  # (2, N_LID, 2) furrow under the lower lid (AU6 bulge)
    crows_feet: np.ndarray  # (2, 3, 2, 2) three short segments at each outer eye corner
    nose_tip: np.ndarray  # (2,)
    nostrils: np.ndarray  # (2, 2) nostril centres
    nostril_size: np.ndarray  # (2,) half-width, half-height
    alae: np.ndarray  # (2, 4, 2) nose wing curves
    nose_bridge: np.ndarray  # (2, 3, 2) side lines of the nose
    nose_wrinkles: np.ndarray  # (5, 2, 2) oblique creases beside the bridge and one across the root (AU9)
    nasolabial: np.ndarray  # (2, 4, 2) folds from the nose wing to beside the mouth corner
    lip_upper_outer: np.ndarray  # (N_LIP, 2) image-left corner -> image-right corner
    lip_upper_inner: np.ndarray  # (N_LIP, 2)
    lip_lower_inner: np.ndarray  # (N_LIP, 2)
    lip_lower_outer: np.ndarray  # (N_LIP, 2)
    mouth_corners: np.ndarray  # (2, 2) [image-left, image-right]
    dimples: np.ndarray  # (2, 2, 2) a short vertical segment beside each corner (AU14)
    chin_lines: np.ndarray  # (3, 2, 2) short segments on the chin boss (AU17)
    forehead_lines: np.ndarray  # (3, N_BROW * 2 - 1, 2) horizontal lines, image-left -> image-right
    glabella_lines: np.ndarray  # (2, 2, 2) vertical segments between the brows (AU4)
    # strengths
    forehead_strength: np.ndarray  # (N_BROW * 2 - 1,) per forehead-line point (AU1 centre, AU2 sides)
    glabella_strength: float
    crows_feet_strength: np.ndarray  # (2,)
    lid_bulge_strength: np.ndarray  # (2,)
    nose_wrinkle_strength: float
    nasolabial_strength: np.ndarray  # (2,)
    dimple_strength: np.ndarray  # (2,)
    chin_strength: float
    lip_press: float  # AU24: darkens the closed lip line
    mouth_gap: float  # centre distance between inner lips
    jaw_drop: float  # how far the chin moved down (AU26)


_JAW_WEIGHT = np.stack([np.zeros(N_OUTLINE), np.clip(np.sin(_PHI), 0.0, None) ** 3], axis=1)


@lru_cache(maxsize=8192)
def _rest_outline(fw: float, top_h: float, chin_h: float, jaw: float, yc: float) -> np.ndarray:
    """Head outline at rest: an ellipse on top, a superellipse jaw below (squarer for larger jaw)."""
    c, s = np.cos(_PHI), np.sin(_PHI)
    n = 2.0 + 1.6 * jaw
    lower = s > 0
    ox = fw * np.sign(c) * np.abs(c) ** np.where(lower, 2.0 / n, 1.0)
    ox = ox * np.where(lower, 1.0 - 0.22 * (1.0 - jaw) * s**2, 1.0)
    oy = np.where(lower, yc + chin_h * np.abs(s) ** (2.0 / n), yc + top_h * s)
    out = np.stack([ox, oy], axis=1)
    out.flags.writeable = False  # shared between calls through the cache
    return out


def _pair(x, y) -> np.ndarray:
    """(2, 2) array of per-side points from per-side (or scalar) x and y; cheaper than np.stack."""
    out = np.empty((2, 2))
    out[:, 0] = x
    out[:, 1] = y
    return out


def _intensities(au: np.ndarray) -> np.ndarray:
    a = np.asarray(au, dtype=np.float64)
    if a.shape != (len(ALL_AUS),):
        raise UserError(f"AU vector must have shape ({len(ALL_AUS)},) ordered as {ALL_AUS}, got {a.shape}")
    return np.clip(a, 0.0, 5.0) / 5.0


_SIDE_MASKS = {None: np.ones(2), "left": np.array([0.0, 1.0]), "right": np.array([1.0, 0.0])}
_ALA_X = np.array([0.55, 0.98, 0.95, 0.62])
_ALA_Y = np.array([-0.075, -0.02, 0.025, 0.045])


@dataclass(frozen=True)
class _Rest:
    """Everything of the geometry that depends on the identity only (computed once per identity).

    Arrays here are shared between calls, so they are read-only; per-call code copies before
    writing.
    """

    outline: np.ndarray
    ears: np.ndarray
    brow_x: np.ndarray  # (N_BROW,) distance of brow points from the midline
    brow_y: np.ndarray  # (2, N_BROW) resting brow height including the asymmetry
    brow_thickness: np.ndarray
    forehead_x: np.ndarray  # (3, 2*N_BROW-1)
    forehead_y: np.ndarray  # (3, 2*N_BROW-1) resting forehead-line heights
    lid_x: np.ndarray  # (2, N_LID)
    lid_y: np.ndarray  # (N_LID,) eye axis including the canthal tilt
    iris_centre: np.ndarray
    crows_feet: np.ndarray
    tip_y: float
    corner_y: np.ndarray  # (2,) resting mouth-corner heights (resting curve and asymmetry)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@lru_cache(maxsize=8192)
def _rest(idt: Identity) -> _Rest:
    yc = -0.08
    outline = _rest_outline(
        idt.face_width, 1.05 * idt.face_height, 0.80 * idt.face_height + 0.05, idt.jaw, yc
    )
    fw, ey, ex, w = idt.face_width, idt.eye_y, idt.eye_spacing, idt.eye_size
    t = _T_BROW
    bx = ex - 0.85 * w + idt.brow_length * t
    by = (
        ey
        - idt.brow_y
        + idt.rest_brow_height
        + idt.rest_brow_inner * (1 - t) ** 2
        - idt.brow_arch * np.sin(np.pi * (0.15 + 0.8 * t))
        + 0.035 * t**2
    )
    fx = np.concatenate([-bx[::-1], bx[1:]]) * 1.15  # image-left -> image-right
    k = np.arange(3)[:, None]
    forehead_x = fx[None, :] * (1.0 - 0.08 * k)
    forehead_y = ey - idt.brow_y - 0.11 - idt.brow_arch - 0.065 * k - 0.02 * (fx / fx.max())[None, :] ** 2
    u = _U_LID
    ecx = _SIDE * ex
    lid_x = ecx[:, None] + _SIDE[:, None] * w * u[None, :]
    crows = np.empty((2, 3, 2, 2))
    ox_c = ecx + _SIDE * (w + 0.025)
    for j, ang in enumerate((-0.45, 0.0, 0.45)):
        dx, dy = 0.075 * np.cos(ang), 0.075 * np.sin(ang)
        crows[:, j, 0, 0] = ox_c
        crows[:, j, 0, 1] = ey + 0.5 * dy - 0.005
        crows[:, j, 1, 0] = ox_c + _SIDE * dx
        crows[:, j, 1, 1] = ey + 1.5 * dy - 0.005
    asym = np.array([0.0, idt.asymmetry])  # the image-right side is offset
    return _Rest(
        outline=outline,
        ears=_frozen(np.array([[-fw + 0.015, ey + 0.12], [fw - 0.015, ey + 0.12]])),
        brow_x=_frozen(bx),
        brow_y=_frozen(by[None, :] + asym[:, None]),
        brow_thickness=_frozen(np.broadcast_to(idt.brow_thickness * (1.15 - 0.55 * t), (2, N_BROW)).copy()),
        forehead_x=_frozen(forehead_x),
        forehead_y=_frozen(forehead_y),
        lid_x=_frozen(lid_x),
        lid_y=_frozen(ey - idt.eye_tilt * u),  # canthal tilt: outer corner usually higher
        iris_centre=_frozen(_pair(ecx + _SIDE * 0.004, ey + 0.006)),
        crows_feet=_frozen(crows),
        tip_y=ey + idt.nose_length + 0.03,
        corner_y=_frozen(idt.mouth_y + idt.rest_mouth_curve + asym),
    )


# AU-independent profiles along the brows and lids
_BROW_AU1 = -0.17 * (1 - _T_BROW) ** 1.5
_BROW_AU2 = -0.16 * _T_BROW**1.2 - 0.03
_BROW_AU4 = 0.10 * (1 - 0.45 * _T_BROW)
_BROW_AU4_X = -0.06 * (1 - _T_BROW) ** 1.2
_T_FORE = np.concatenate([_T_BROW[::-1], _T_BROW[1:]])
_FORE_AU1 = 1.3 * (1 - _T_FORE) ** 0.7
_FORE_AU2 = 1.2 * _T_FORE**0.7
_LID_PAR = 1 - _U_LID**2
_LID_UP = _LID_PAR**0.75 * (1 + 0.12 * _U_LID)
_LID_CREASE = _LID_PAR**0.5
_LID_CREASE_X = 1.0 + 0.03 * _U_LID
_LID_BULGE_X = 1.0 + 0.05 * _U_LID
_LIP_ABS = np.abs(_U_LIP)


def face_geometry(identity: Identity, au: np.ndarray, unilateral: str | None = None) -> Geometry:
    """Landmarks of ``identity`` showing AU intensities ``au``.

    ``au``: float array of shape (17,), intensities 0..5 ordered as ``clef.labels.ALL_AUS``
    (values outside are clipped). ``unilateral``: None, ``"left"`` or ``"right"`` (subject's side;
    see the module docstring); when set, AU12 and AU14 act on that side only (contempt).
    Raises :class:`UserError` for a wrong shape or an unknown ``unilateral``.
    """
    if unilateral not in UNILATERAL_CHOICES:
        raise UserError(f"unknown unilateral side {unilateral!r}; valid: None, 'left', 'right'")
    a = _intensities(au)
    a1, a2, a4, a5, a6, a7, a9, a10, a12, a14, a15, a17, a20, a23, a24, a25, a26 = a.tolist()
    # per-side AU12/AU14; the subject's left is the image-right half (index 1)
    side_mask = _SIDE_MASKS[unilateral]
    s12 = a12 * side_mask
    s14 = a14 * side_mask
    idt = identity
    rest = _rest(idt)

    # --- head outline and jaw (AU26 drops the lower half, AU17 lifts the chin boss)
    yc = -0.08
    jaw_drop = 0.16 * a26
    outline = rest.outline + (jaw_drop - 0.025 * a17) * _JAW_WEIGHT
    chin = outline[N_OUTLINE // 4].copy()

    # --- brows: AU1 inner ends up, AU2 outer ends up, AU4 down and towards the midline
    ey, w = idt.eye_y, idt.eye_size
    dy_brow = a1 * _BROW_AU1 + a2 * _BROW_AU2 + a4 * _BROW_AU4
    brows = np.empty((2, N_BROW, 2))
    brows[:, :, 0] = _SIDE[:, None] * (rest.brow_x + a4 * _BROW_AU4_X)[None, :]
    brows[:, :, 1] = rest.brow_y + dy_brow[None, :]

    # forehead lines follow the brows part-way; AU1 deepens the centre, AU2 the sides
    fdy = np.concatenate([dy_brow[::-1], dy_brow[1:]])
    forehead_lines = np.empty((3, 2 * N_BROW - 1, 2))
    forehead_lines[:, :, 0] = rest.forehead_x
    forehead_lines[:, :, 1] = rest.forehead_y + 0.6 * fdy[None, :]
    forehead_strength = a1 * _FORE_AU1 + a2 * _FORE_AU2 + 0.25 * idt.age_lines
    inner_y = 0.5 * (brows[0, 0, 1] + brows[1, 0, 1])
    gx = 0.05 - 0.012 * a4
    glabella_lines = np.array(
        [
            [[-gx, inner_y - 0.05], [-gx * 0.8, inner_y + 0.05]],
            [[gx, inner_y - 0.05], [gx * 0.8, inner_y + 0.05]],
        ]
    )
    glabella_strength = 1.4 * a4

    # --- eyes: AU5 raises the upper lid, AU7 tightens both lids (lower lid up and straight),
    # AU6 pushes the lower lid up from below
    hu = w * idt.eye_open * (1 + idt.rest_lid) * (1 + 1.5 * a5) * (1 - 0.45 * a7) * (1 - 0.12 * a6)
    hl = w * 0.38 * (1 - 0.6 * a7) * (1 - 0.45 * a6)
    lid_shift = -0.045 * a7 - 0.012 * a6  # lower lid rises as a whole
    up_y = rest.lid_y - hu * _LID_UP
    lo_y = rest.lid_y + lid_shift * _LID_PAR + hl * _LID_PAR ** (0.9 - 0.4 * a7)
    # strong 6+7 must not push the lower lid through the upper one
    lo_y = np.maximum(lo_y, up_y + 0.006 * _LID_PAR)
    eye_upper = np.empty((2, N_LID, 2))
    eye_upper[:, :, 0] = rest.lid_x
    eye_upper[:, :, 1] = up_y
    eye_lower = np.empty((2, N_LID, 2))
    eye_lower[:, :, 0] = rest.lid_x
    eye_lower[:, :, 1] = lo_y
    lid_crease = np.empty((2, N_LID, 2))
    lid_crease[:, :, 0] = rest.lid_x * _LID_CREASE_X
    lid_crease[:, :, 1] = up_y - w * (0.30 - 0.14 * a5 + 0.06 * a7) * _LID_CREASE - 0.01
    cheeks = _pair(_SIDE * (idt.eye_spacing + 0.03), ey + 0.27 - 0.1 * a6 - 0.02 * s12)
    lid_bulge = np.empty((2, N_LID, 2))
    lid_bulge[:, :, 0] = rest.lid_x * _LID_BULGE_X
    lid_bulge[:, :, 1] = lo_y + 0.04 + 0.015 * _LID_PAR - 0.01 * a6
    lid_bulge_strength = np.full(2, 1.2 * a6 + 0.15 * idt.age_lines)
    crows_feet_strength = np.full(2, 1.3 * a6 + 0.1 * idt.age_lines)

    # --- nose: AU9 wrinkles the bridge and lifts the wings, AU10 lifts and widens the wings a little
    nw = idt.nose_width
    tip_y = rest.tip_y
    lift = 0.055 * a9 + 0.025 * a10
    widen = 0.012 * a9 + 0.015 * a10
    nose_tip = np.array([0.0, tip_y - 0.3 * lift])
    nostrils = _pair(_SIDE * (0.45 * nw + 0.5 * widen), tip_y + 0.03 - lift)
    nostril_size = np.array([0.32 * nw, 0.14 * nw])
    alae = np.empty((2, 4, 2))
    alae[:, :, 0] = _SIDE[:, None] * (_ALA_X * nw + widen)[None, :]
    alae[:, :, 1] = (tip_y - lift) + _ALA_Y
    nose_bridge = np.array(
        [
            [[-0.06, ey + 0.03], [-0.065, ey + 0.15], [-(0.5 * nw + 0.02), tip_y - 0.09 - lift]],
            [[0.06, ey + 0.03], [0.065, ey + 0.15], [0.5 * nw + 0.02, tip_y - 0.09 - lift]],
        ]
    )
    # "bunny lines": short oblique creases on both sides of the upper nose, plus one across the root
    y = ey - 0.012 * a9
    y_root = ey + 0.01 - 0.01 * a9
    nose_wrinkles = np.array(
        [
            [[-0.03, y + 0.05], [-0.1, y + 0.09]],
            [[0.03, y + 0.05], [0.1, y + 0.09]],
            [[-0.03, y + 0.095], [-0.1, y + 0.135]],
            [[0.03, y + 0.095], [0.1, y + 0.135]],
            [[-0.04, y_root], [0.04, y_root]],
        ]
    )
    nose_wrinkle_strength = 1.5 * a9

    # --- mouth corners: AU12 up and out, AU14 in with dimples, AU15 down, AU20 out, AU23/24 in,
    # AU17 a little down (inverted-U mouth), AU26 down and in (rounder opening)
    corner_x = (
        idt.mouth_width
        + 0.08 * s12
        - 0.06 * s14
        + (0.012 * a15 + 0.10 * a20 - 0.03 * a23 - 0.015 * a24 - 0.025 * a26)
    )
    corner_y = (
        rest.corner_y
        - 0.11 * s12
        - 0.02 * s14
        + (0.10 * a15 + 0.012 * a20 + 0.03 * a17 + 0.05 * a26 + 0.01 * a25)
    )
    mouth_corners = _pair(_SIDE * corner_x, corner_y)

    # --- lips. Closure line: centre y0, bending towards the corners.
    y0 = idt.mouth_y - 0.08 * a17 - 0.015 * a10
    squeeze = (1 - 0.85 * a24) * (1 - 0.5 * a23)
    gap_up = (0.025 * a25 + 0.045 * a10 + 0.02 * a9 + 0.01 * a26) * squeeze
    gap_dn = (0.06 * a25 + 0.75 * jaw_drop) * squeeze
    thin = (1 - 0.6 * a23) * (1 - 0.5 * a24) * (1 - 0.3 * a20)
    tu = idt.upper_lip * thin * (1 + 0.15 * a10)
    tl = idt.lower_lip * thin
    cxl, cxr = float(corner_x[0]), float(corner_x[1])
    cyl, cyr = float(corner_y[0]), float(corner_y[1])
    lx = _LIP_ABS * np.where(_LIP_LEFT, -cxl, cxr)
    mid = y0 + (np.where(_LIP_LEFT, cyl, cyr) - y0) * _LIP_CURVE
    upper_inner = mid - gap_up * _LIP_OPEN * _LIP_CENTRE
    lower_inner = np.maximum(mid + gap_dn * _LIP_OPEN - 0.015 * a17 * _LIP_CENTRE, upper_inner)
    upper_outer = upper_inner - tu * _LIP_BOW - 0.015 * a10 * _LIP_CENTRE
    lower_outer = lower_inner + tl * _LIP_LOWER
    lips = np.empty((4, N_LIP, 2))
    lips[:, :, 0] = lx
    lips[0, :, 1] = upper_outer
    lips[1, :, 1] = upper_inner
    lips[2, :, 1] = lower_inner
    lips[3, :, 1] = lower_outer
    c = N_LIP // 2
    mouth_gap = float(lower_inner[c] - upper_inner[c])

    dimples = np.array(
        [
            [[-(cxl + 0.04), cyl - 0.03], [-(cxl + 0.04), cyl + 0.03]],
            [[cxr + 0.04, cyr - 0.03], [cxr + 0.04, cyr + 0.03]],
        ]
    )
    dimple_strength = 1.6 * s14

    # nasolabial folds end beside the mouth corner, so AU12/AU20 drag their lower end
    x0, x1 = nw + 0.025 + widen, nw + 0.07 + widen
    y0n, y1n = tip_y - 0.04 - lift, tip_y + 0.05 - 0.5 * lift
    nasolabial = np.array(
        [
            [
                [-x0, y0n],
                [-x1, y1n],
                [-(0.5 * (x1 + cxl + 0.05) + 0.03), 0.5 * (y1n + cyl + 0.04)],
                [-(cxl + 0.05), cyl + 0.04],
            ],
            [
                [x0, y0n],
                [x1, y1n],
                [0.5 * (x1 + cxr + 0.05) + 0.03, 0.5 * (y1n + cyr + 0.04)],
                [cxr + 0.05, cyr + 0.04],
            ],
        ]
    )
    nasolabial_strength = (
        (0.35 * idt.age_lines + 0.3 * a6 + 0.7 * a9 + 0.8 * a10 - 0.2 * a20) + 0.8 * s12 + 0.2 * s14
    ).clip(0.0)

    # chin boss (AU17): short wrinkles between the lower lip and the chin
    cb = 0.5 * (lower_outer[c] + chin[1]) - 0.01 * a17
    chin_lines = np.array(
        [
            [[-0.07, cb - 0.01], [-0.03, cb + 0.015]],
            [[-0.02, cb + 0.02], [0.02, cb + 0.02]],
            [[0.03, cb + 0.015], [0.07, cb - 0.01]],
        ]
    )
    chin_strength = 1.4 * a17

    return Geometry(
        outline=outline,
        chin=chin,
        face_centre=np.array([0.0, yc]),
        ears=rest.ears,
        brows=brows,
        brow_thickness=rest.brow_thickness,
        eye_upper=eye_upper,
        eye_lower=eye_lower,
        lid_crease=lid_crease,
        iris_centre=rest.iris_centre,
        iris_radius=0.52 * w,
        cheeks=cheeks,
        lid_bulge=lid_bulge,
        crows_feet=rest.crows_feet,
        nose_tip=nose_tip,
        nostrils=nostrils,
        nostril_size=nostril_size,
        alae=alae,
        nose_bridge=nose_bridge,
        nose_wrinkles=nose_wrinkles,
        nasolabial=nasolabial,
        lip_upper_outer=lips[0],
        lip_upper_inner=lips[1],
        lip_lower_inner=lips[2],
        lip_lower_outer=lips[3],
        mouth_corners=mouth_corners,
        dimples=dimples,
        chin_lines=chin_lines,
        forehead_lines=forehead_lines,
        glabella_lines=glabella_lines,
        forehead_strength=forehead_strength,
        glabella_strength=glabella_strength,
        crows_feet_strength=crows_feet_strength,
        lid_bulge_strength=lid_bulge_strength,
        nose_wrinkle_strength=nose_wrinkle_strength,
        nasolabial_strength=nasolabial_strength,
        dimple_strength=dimple_strength,
        chin_strength=chin_strength,
        lip_press=1.2 * a24,
        mouth_gap=mouth_gap,
        jaw_drop=jaw_drop,
    )
