"""Fast rendering of synthetic face crops.

:func:`render_face` draws the landmarks of :func:`clef.synth.face.face_geometry` as a few dozen
polygons, lines and ellipses with Pillow on a canvas ``ss`` times larger than the output, then
reduces it with a box filter (anti-aliasing by supersampling). Per-frame :class:`Nuisance`\\ s (pose,
lighting, blur, sensor noise, and in the wild domain background and occluders) are applied as one
affine map of all points before drawing, and as cheap array operations after the reduction.

Speed is a requirement (the world renders >= 1,000 images/s at 64x64 on two cores), hence: all
points go through one matrix product, everything that depends on the identity only (colours, hair
shapes) is cached per identity, and noise comes from a precomputed tile indexed by ``rng``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from clef.errors import UserError
from clef.synth.face import N_BROW, N_LID, N_LIP, N_OUTLINE, Geometry, face_geometry
from clef.synth.identity import DOMAINS, Identity

RGB = tuple[int, int, int]
MIN_SIZE = 16
BACKGROUNDS: tuple[str, ...] = ("subject", "plain", "gradient", "texture")
OCCLUSIONS: tuple[str, ...] = ("hand", "hat", "sunglasses", "patch")
_NOISE_TILE = 512
_N_TEXTURES = 8
# The canonical frame is magnified a little so that, like an aligned dataset crop, the face fills
# most of the image and the top of the head is cut off.
_ZOOM = 1.12
_TEETH_DEPTH = 0.06 * np.sqrt(1 - np.linspace(-1, 1, N_LIP) ** 2)  # upper-teeth height along the mouth
_YAW_SHIFT = 0.2  # canonical x shift of a depth-1 feature (nose tip) at yaw 1


@dataclass(frozen=True)
class Nuisance:
    """Everything that changes from frame to frame except the expression.

    Geometry: ``rotation`` in degrees (in-plane, positive = clockwise on screen); ``yaw`` in about
    [-1, 1] shifts protruding features (nose most) sideways like a head turn, ``squash`` scales x
    (foreshortening); ``shift_x``/``shift_y`` in canonical units (1 = half the crop); ``scale``
    multiplies the face size. Photometry: a linear lighting gradient of ``light_strength`` towards
    ``light_angle`` (radians, 0 = from the image right), a global ``brightness`` gain, Gaussian blur
    ``blur_sigma`` (pixels at 64x64, scaled with the size), sensor noise ``noise_sigma`` (grey
    levels), and ``jpeg_quality`` for :func:`encode_jpeg` when files are written. Wild only:
    ``background`` kind (``"subject"`` uses the identity's lab backdrop) with colours and a texture
    index, and an ``occlusion`` (None or one of ``OCCLUSIONS``) at ``occlusion_x``/``occlusion_y``
    of ``occlusion_size``, rotated by ``occlusion_angle`` degrees, in ``occlusion_color``.
    """

    rotation: float = 0.0
    yaw: float = 0.0
    squash: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    scale: float = 1.0
    light_angle: float = 0.0
    light_strength: float = 0.0
    brightness: float = 1.0
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    jpeg_quality: int = 95
    background: str = "subject"
    background_color: RGB = (128, 128, 128)
    background_color2: RGB = (64, 64, 64)
    texture: int = 0
    occlusion: str | None = None
    occlusion_x: float = 0.0
    occlusion_y: float = 0.0
    occlusion_size: float = 0.0
    occlusion_angle: float = 0.0
    occlusion_color: RGB = (40, 40, 40)


def sample_nuisance(rng: np.random.Generator, domain: str = "lab") -> Nuisance:
    """Draw one frame's nuisances: small ones for ``"lab"`` (a fixed camera in a studio), larger
    pose, lighting, blur and noise plus background and occlusion variation for ``"wild"``.

    Consumes a fixed number of draws from ``rng`` (independent of branches). Raises
    :class:`UserError` for an unknown domain.
    """
    if domain not in DOMAINS:
        raise UserError(f"unknown domain {domain!r}; valid domains: {', '.join(DOMAINS)}")
    n = rng.standard_normal(8)
    u = rng.random(16)
    if domain == "lab":
        return Nuisance(
            rotation=float(np.clip(2.0 * n[0], -5, 5)),
            yaw=float(np.clip(0.08 * n[1], -0.2, 0.2)),
            squash=float(1.0 - 0.03 * abs(n[1])),
            shift_x=float(np.clip(0.02 * n[2], -0.05, 0.05)),
            shift_y=float(np.clip(0.02 * n[3], -0.05, 0.05)),
            scale=float(np.clip(1.0 + 0.025 * n[4], 0.94, 1.06)),
            light_angle=float(2 * np.pi * u[0]),
            light_strength=float(0.12 * u[1]),
            brightness=float(np.clip(1.0 + 0.05 * n[5], 0.88, 1.12)),
            blur_sigma=float(0.5 * u[2]) if u[3] < 0.5 else 0.0,
            noise_sigma=float(1.0 + 2.5 * u[4]),
            jpeg_quality=int(80 + 16 * u[5]),
        )
    yaw = float(np.clip(0.3 * n[1], -0.7, 0.7))
    occ = OCCLUSIONS[int(u[9] * len(OCCLUSIONS))] if u[8] < 0.25 else None
    return Nuisance(
        rotation=float(np.clip(7.0 * n[0], -18, 18)),
        yaw=yaw,
        squash=float(1.0 - 0.2 * abs(yaw) - 0.03 * u[10]),
        shift_x=float(np.clip(0.05 * n[2], -0.12, 0.12)),
        shift_y=float(np.clip(0.05 * n[3], -0.12, 0.12)),
        scale=float(np.clip(1.0 + 0.06 * n[4], 0.85, 1.15)),
        light_angle=float(2 * np.pi * u[0]),
        light_strength=float(0.35 * u[1]),
        brightness=float(np.clip(1.0 + 0.15 * n[5], 0.65, 1.35)),
        blur_sigma=float(0.9 * u[2]) if u[3] < 0.5 else 0.0,
        noise_sigma=float(6.0 * u[4]),
        jpeg_quality=int(60 + 36 * u[5]),
        background=BACKGROUNDS[1 + int(u[6] * 3)],
        # real backgrounds are rarely saturated: pull random colours half-way to their grey
        background_color=_muted(rng.integers(0, 256, 3)),
        background_color2=_muted(rng.integers(0, 256, 3)),
        texture=int(u[7] * _N_TEXTURES),
        occlusion=occ,
        occlusion_x=float(0.5 * n[6]),
        occlusion_y=float(0.35 + 0.3 * n[7]),
        occlusion_size=float(0.3 + 0.25 * u[11]),
        occlusion_angle=float(360 * u[12]),
        occlusion_color=_rgb(rng.integers(0, 256, 3)),
    )


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of a uint8 (H, W, 3) image at ``quality`` (1..95), 4:2:0 subsampling as cameras do."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


# ----------------------------------------------------------------------------- colours and caches


def _rgb(v) -> RGB:
    a = np.clip(np.rint(np.asarray(v, dtype=np.float64)), 0, 255).astype(int)
    return (int(a[0]), int(a[1]), int(a[2]))


def _muted(v: np.ndarray) -> RGB:
    v = np.asarray(v, dtype=np.float64)
    return _rgb(0.5 * v + 0.5 * v.mean())


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    t = min(max(t, 0.0), 1.0)
    return (
        int(a[0] + (b[0] - a[0]) * t + 0.5),
        int(a[1] + (b[1] - a[1]) * t + 0.5),
        int(a[2] + (b[2] - a[2]) * t + 0.5),
    )


def _scale(c: RGB, f: float) -> RGB:
    return (min(255, int(c[0] * f + 0.5)), min(255, int(c[1] * f + 0.5)), min(255, int(c[2] * f + 0.5)))


@dataclass(frozen=True)
class _Style:
    """Identity-only drawing data: colours and hair/neck/shirt polygons (canonical frame)."""

    skin: RGB
    skin_edge: RGB
    skin_mid: RGB
    neck: RGB
    lid: RGB
    crease: RGB
    wrinkle: RGB
    blush: RGB
    lip: RGB
    lip_line: RGB
    lip_edge: RGB
    highlight: RGB
    mouth: RGB
    teeth: RGB
    sclera: RGB
    iris: RGB
    pupil: RGB
    catchlight: RGB
    lash: RGB
    brow: RGB
    hair: RGB
    hair_dark: RGB
    beard: RGB
    nostril: RGB
    nose_line: RGB
    freckle: RGB
    shirt: RGB
    shirt_poly: np.ndarray
    neck_poly: np.ndarray
    hair_back: np.ndarray | None
    hair_front: np.ndarray | None
    strands: np.ndarray | None  # (K, 3, 2) darker strokes inside the front hair
    bun: tuple[float, float, float] | None  # centre x, y and radius
    freckles: np.ndarray  # (K, 2)
    ears: bool


@lru_cache(maxsize=8192)
def _style(idt: Identity) -> _Style:
    geo = face_geometry(idt, np.zeros(17))
    skin = idt.skin
    fw = idt.face_width
    top = geo.outline[N_OUTLINE // 2 :]  # upper half: image-left (phi = pi) over the top to image-right
    top = np.concatenate([top, geo.outline[:1]])
    cen = geo.face_centre
    vol = idt.hair_volume
    style = idt.hair_style
    hair_back = hair_front = strands = None
    bun = None
    temple_y = idt.eye_y - 0.1
    if style != "bald":
        k = 1.0 + vol / fw
        phi = np.linspace(np.pi, 2 * np.pi, top.shape[0])
        if style == "curly":
            k = k + 0.05 + 0.035 * np.sin(11 * phi) ** 2
        cap = cen + (top - cen) * (k if np.isscalar(k) else k[:, None])
        # hairline: temples low, centre at idt.hairline; a fringe comes down to just above the brows
        hx = np.linspace(fw * 0.98, -fw * 0.98, 15)
        if style == "fringe":
            brow_top = float(geo.brows[:, :, 1].min()) - 0.1
            hy = brow_top + 0.02 * np.cos(np.linspace(0, 13 * np.pi, 15)) - 0.04 * (hx / fw) ** 2
            hy[0] = hy[-1] = temple_y
        else:
            hy = idt.hairline + (temple_y - idt.hairline) * np.abs(hx / fw) ** 2.5
        hair_front = np.concatenate([cap[cap[:, 1] < temple_y + 0.02], np.stack([hx, hy], 1)])
        # strokes from the crown (or a side parting) down to the hairline
        part = 0.25 * fw * (idt.detail_seed % 3 - 1)
        crown = np.array([part, float(cap[:, 1].min()) + 0.05])
        ends = np.stack([hx[2:-2:3], hy[2:-2:3] - 0.05], 1)
        mids = 0.5 * (crown + ends) + np.stack([0.08 * np.sign(ends[:, 0] - part), np.zeros(len(ends))], 1)
        strands = np.stack([np.broadcast_to(crown, ends.shape), mids, ends], 1)
        if style == "long":
            side = np.array([[fw + 0.12 + vol, 1.4], [-(fw + 0.12 + vol), 1.4]])
            hair_back = np.concatenate([cen + (top - cen) * (1.0 + (vol + 0.05) / fw), side])
        elif style == "curly":
            hair_back = np.concatenate(
                [cap, np.array([[fw + vol, idt.eye_y + 0.35], [-fw - vol, idt.eye_y + 0.35]])]
            )
        elif style == "bun":
            # high on the back of the head, off-centre so that the crop shows it
            side = 1.0 if idt.detail_seed % 2 else -1.0
            bun = (side * 0.55 * fw, float(cap[:, 1].min()) + 0.2, 0.18 + vol)
    r = np.random.default_rng(idt.detail_seed)
    nf = int(40 * idt.freckles)
    fx = r.uniform(-1, 1, nf)
    freckles = np.stack(
        [
            fx * (idt.eye_spacing + 0.12),
            # across the cheeks and over the nose, a little higher near the midline
            idt.eye_y + 0.2 + 0.12 * r.uniform(-1, 1, nf) - 0.04 * (1 - fx**2),
        ],
        1,
    )
    neck_w = 0.42 * fw
    chin_y = float(geo.chin[1])
    neck_poly = np.array(
        [[-neck_w, chin_y - 0.3], [neck_w, chin_y - 0.3], [neck_w * 1.08, 1.4], [-neck_w * 1.08, 1.4]]
    )
    shirt_poly = np.array(
        [
            [-1.5, 1.5],
            [-1.3, chin_y + 0.28],
            [-0.5, chin_y + 0.18],
            [0.5, chin_y + 0.18],
            [1.3, chin_y + 0.28],
            [1.5, 1.5],
        ]
    )
    beard = idt.hair_color if idt.beard in ("full", "goatee") else _mix(skin, idt.hair_color, 0.45)
    return _Style(
        skin=skin,
        skin_edge=_scale(skin, 0.8),
        skin_mid=_scale(skin, 0.91),
        neck=_scale(skin, 0.74),
        lid=_scale(skin, 0.93),
        crease=_scale(skin, 0.7),
        wrinkle=_scale(skin, 0.55),
        blush=_mix(skin, (225, 110, 100), 0.18),
        lip=idt.lip_color,
        lip_line=_scale(idt.lip_color, 0.45),
        lip_edge=_scale(idt.lip_color, 0.8),
        highlight=_mix(skin, (255, 250, 240), 0.12),
        mouth=(55, 18, 22),
        teeth=(236, 232, 218),
        sclera=_mix((240, 238, 232), skin, 0.12),
        iris=idt.iris_color,
        pupil=(12, 10, 10),
        catchlight=(235, 235, 235),
        lash=_scale(_mix(idt.brow_color, (20, 16, 14), 0.6), 0.9),
        brow=idt.brow_color,
        hair=idt.hair_color,
        hair_dark=_scale(idt.hair_color, 0.75),
        beard=beard,
        nostril=_scale(skin, 0.3),
        nose_line=_scale(skin, 0.74),
        freckle=_mix(skin, (120, 60, 30), 0.4),
        shirt=idt.shirt_color,
        shirt_poly=shirt_poly,
        neck_poly=neck_poly,
        hair_back=hair_back,
        hair_front=hair_front,
        strands=strands,
        bun=bun,
        freckles=freckles,
        ears=style != "long",
    )


@lru_cache(maxsize=8)
def _noise_tile() -> np.ndarray:
    return np.random.default_rng(20231001).standard_normal((_NOISE_TILE, _NOISE_TILE, 3)).astype(np.float32)


@lru_cache(maxsize=16)
def _light_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    return np.broadcast_to(g[None, :], (size, size)), np.broadcast_to(g[:, None], (size, size))


@lru_cache(maxsize=64)
def _texture(canvas: int, k: int) -> Image.Image:
    """Grey ("L") texture of low and some fine frequencies, ``canvas`` pixels square."""
    r = np.random.default_rng(1000 + k)
    small = (r.random((6 + 2 * k, 6 + 2 * k)) * 255).astype(np.uint8)
    img = Image.fromarray(small).resize((canvas, canvas), Image.Resampling.BICUBIC)
    fine = (r.random((canvas // 4, canvas // 4)) * 255).astype(np.uint8)
    fine_img = Image.fromarray(fine).resize((canvas, canvas), Image.Resampling.BILINEAR)
    t = 0.75 * np.asarray(img, np.float32) + 0.25 * np.asarray(fine_img, np.float32)
    return Image.fromarray(t.astype(np.uint8))


@lru_cache(maxsize=16)
def _ramp_image(canvas: int) -> Image.Image:
    """Grey ("L") vertical ramp from 0 at the top to 255 at the bottom."""
    ramp = np.linspace(0, 255, canvas).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(np.broadcast_to(ramp[:, None], (canvas, canvas))))


def _supersample(size: int) -> int:
    # about 192 canvas pixels is enough for clean edges; big outputs need only 2x
    return max(2, min(4, round(192 / size)))


# ----------------------------------------------------------------------------- drawing


def _affine(nz: Nuisance, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset taking canonical (x, y) to pixel coordinates of a ``pixels``-wide image."""
    half = pixels / 2.0
    rot = math.radians(nz.rotation)
    cr, sr = math.cos(rot), math.sin(rot)
    k = half * nz.scale * _ZOOM
    m = np.array([[k * cr * nz.squash, -k * sr], [k * sr * nz.squash, k * cr]])
    b = np.array([half * (1.0 + nz.shift_x), half * (1.0 + nz.shift_y)])
    return m, b


def landmarks_to_pixels(points: np.ndarray, nuisance: Nuisance, size: int, depth: float = 0.5) -> np.ndarray:
    """Pixel coordinates (x = column, y = row, within about half a pixel) of canonical ``points`` (..., 2)
    in a ``size`` image rendered with ``nuisance``; ``depth`` is the feature's protrusion used by
    the pseudo-yaw (0 = face outline, 1 = nose tip)."""
    p = np.asarray(points, dtype=np.float64)
    shape = p.shape
    p = p.reshape(-1, 2).copy()
    p[:, 0] += nuisance.yaw * _YAW_SHIFT * depth
    m, b = _affine(nuisance, size)
    return (p @ m.T + b).reshape(shape)


class _Batch:
    """Collects canonical point groups with a depth each; one affine map sends all to pixels."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self.depths: list[float] = []
        self.counts: list[int] = []
        self.n = 0

    def add(self, pts: np.ndarray, depth: float) -> tuple[int, int]:
        p = pts.reshape(-1, 2)
        self.arrays.append(p)
        self.depths.append(depth)
        self.counts.append(p.shape[0])
        start = self.n
        self.n += p.shape[0]
        return start, self.n

    def transform(self, m: np.ndarray, b: np.ndarray, yaw: float) -> list[float]:
        pts = np.concatenate(self.arrays)
        if yaw:
            pts = pts.copy()
            pts[:, 0] += yaw * _YAW_SHIFT * np.repeat(self.depths, self.counts)
        return (pts @ m.T + b).ravel().tolist()


def _background(idt: Identity, nz: Nuisance, canvas: int) -> Image.Image:
    if nz.background == "subject":
        return Image.new("RGB", (canvas, canvas), idt.background)
    if nz.background == "plain":
        return Image.new("RGB", (canvas, canvas), nz.background_color)
    if nz.background == "gradient":
        grey = _ramp_image(canvas)
    elif nz.background == "texture":
        grey = _texture(canvas, nz.texture % _N_TEXTURES)
    else:
        raise UserError(f"unknown background {nz.background!r}; valid: {', '.join(BACKGROUNDS)}")
    # colourise the cached grey image with one lookup table per channel (C speed)
    lut = np.linspace(nz.background_color, nz.background_color2, 256).round().astype(int).T.ravel().tolist()
    return Image.merge("RGB", (grey, grey, grey)).point(lut)


def _strength_colour(base: RGB, dark: RGB, strength: float) -> RGB:
    return _mix(base, dark, 0.85 * min(strength, 1.2) / 1.2)


def render_face(
    identity: Identity,
    au: np.ndarray,
    nuisance: Nuisance,
    size: int = 64,
    unilateral: str | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Render an aligned, frontal-ish face crop.

    ``au``: (17,) intensities 0..5 in ``clef.labels.ALL_AUS`` order; ``unilateral``: None, "left"
    or "right" (AU12/AU14 on the subject's side only, see :mod:`clef.synth.face`). Sensor noise
    is drawn from ``rng`` (two integers when ``nuisance.noise_sigma > 0``, nothing otherwise);
    with ``rng=None`` no noise is added. Returns a
    uint8 array of shape (size, size, 3); the same inputs and ``rng`` state give the same bytes.
    Raises :class:`UserError` if ``size < 16``.
    """
    if int(size) != size or size < MIN_SIZE:
        raise UserError(f"image size must be an integer >= {MIN_SIZE}, got {size!r}")
    size = int(size)
    geo = face_geometry(identity, au, unilateral)
    st = _style(identity)
    ss = _supersample(size)
    canvas_px = size * ss
    half = canvas_px / 2.0
    img = _background(identity, nuisance, canvas_px)
    draw = ImageDraw.Draw(img)

    m, b = _affine(nuisance, canvas_px)
    unit = half * nuisance.scale * _ZOOM  # canvas pixels per canonical unit, for widths and radii

    def px(w: float) -> int:
        return max(1, int(round(w * unit)))

    batch = _Batch()
    add = batch.add
    g: Geometry = geo
    s_shirt = add(st.shirt_poly, -0.2)
    s_hback = add(st.hair_back, -0.3) if st.hair_back is not None else None
    s_neck = add(st.neck_poly, -0.1)
    s_ears = add(g.ears, -0.5)
    s_outline = add(g.outline, 0.0)
    # three nested tones fake the face turning away from the camera at its edges
    s_mid = add(g.face_centre + (g.outline - g.face_centre) * 0.95, 0.1)
    s_inner = add(g.face_centre + (g.outline - g.face_centre) * 0.88, 0.15)
    s_cheeks = add(g.cheeks, 0.6)
    s_socket = add(g.iris_centre + np.array([0.0, -0.045]), 0.4)
    eye_w = identity.eye_size * unit
    s_freck = add(st.freckles, 0.6) if len(st.freckles) else None
    s_fore = add(g.forehead_lines, 0.3)
    s_hfront = add(st.hair_front, 0.1) if st.hair_front is not None else None
    s_strands = add(st.strands, 0.1) if st.strands is not None else None
    s_bun = add(np.array(st.bun[:2]), -0.2) if st.bun is not None else None
    # eyes: white = upper + lower reversed; covers hide the iris outside the lids
    up, lo = g.eye_upper, g.eye_lower
    cover_up = np.concatenate([up, up[:, ::-1] + np.array([0.0, -0.1])], axis=1)
    cover_lo = np.concatenate([lo, lo[:, ::-1] + np.array([0.0, 0.1])], axis=1)
    white = np.concatenate([up, lo[:, ::-1]], axis=1)
    s_white = add(white, 0.45)
    s_iris = add(g.iris_centre, 0.5)
    s_cup = add(cover_up, 0.45)
    s_clo = add(cover_lo, 0.45)
    s_up = add(up, 0.45)
    s_lo = add(lo, 0.45)
    s_crease = add(g.lid_crease, 0.45)
    s_bulge = add(g.lid_bulge, 0.5)
    s_crow = add(g.crows_feet, 0.3)
    s_glab = add(g.glabella_lines, 0.6)
    s_nwr = add(g.nose_wrinkles, 0.7)
    s_nl = add(g.nasolabial, 0.6)
    s_dimp = add(g.dimples, 0.55)
    s_chinl = add(g.chin_lines, 0.55)
    # brows as polygons: upper edge then lower edge reversed
    th = g.brow_thickness[:, :, None] * np.array([0.0, 0.5])
    brow_poly = np.concatenate([g.brows - th, (g.brows + th)[:, ::-1]], axis=1)
    s_brow = add(brow_poly, 0.55)
    s_bridge = add(g.nose_bridge, 0.75)
    s_alae = add(g.alae, 0.85)
    s_nost = add(g.nostrils, 0.9)
    s_tip = add(g.nose_tip, 1.0)
    # mouth
    uo, ui, li, lo_ = g.lip_upper_outer, g.lip_upper_inner, g.lip_lower_inner, g.lip_lower_outer
    open_mouth = g.mouth_gap > 0.006
    s_mouth = add(np.concatenate([ui, li[::-1]]), 0.65)
    teeth_lo = np.minimum(ui[:, 1] + _TEETH_DEPTH, li[:, 1])  # teeth end at the lower lip
    s_teeth = add(np.concatenate([ui[1:-1], np.stack([ui[-2:0:-1, 0], teeth_lo[-2:0:-1]], 1)]), 0.65)
    s_ulip = add(np.concatenate([uo, ui[::-1]]), 0.65)
    s_llip = add(np.concatenate([li, lo_[::-1]]), 0.65)
    s_line = add(ui, 0.65)
    s_mento = add(lo_[N_LIP // 2] + np.array([0.0, 0.035]), 0.55)
    s_beard = add(_beard_polygon(identity, g), 0.4) if identity.beard != "none" else None
    s_glasses = add(_glasses_points(identity, g), 0.5) if identity.glasses != "none" else None
    s_occ = add(_occluder_points(nuisance), 0.9) if nuisance.occlusion is not None else None

    xy = batch.transform(m, b, nuisance.yaw)

    def seg(s: tuple[int, int]) -> list[float]:
        return xy[2 * s[0] : 2 * s[1]]

    def sub(s: tuple[int, int], i: int, n: int) -> list[float]:
        # the i-th of consecutive groups of n points inside slice s
        a = 2 * (s[0] + i * n)
        return xy[a : a + 2 * n]

    def ellipse(cx: float, cy: float, rx: float, ry: float, fill: RGB) -> None:
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)

    polygon = draw.polygon
    line = draw.line

    polygon(seg(s_shirt), fill=st.shirt)
    if s_hback is not None:
        polygon(seg(s_hback), fill=st.hair_dark)
    if s_bun is not None:
        bx, by = seg(s_bun)
        r = st.bun[2] * unit
        ellipse(bx, by, r, r * 0.9, st.hair_dark)
    polygon(seg(s_neck), fill=st.neck)
    if st.ears:
        e = seg(s_ears)
        for i in range(2):
            ellipse(e[2 * i], e[2 * i + 1], 0.075 * unit, 0.14 * unit, st.skin_edge)
    polygon(seg(s_outline), fill=st.skin_edge)
    polygon(seg(s_mid), fill=st.skin_mid)
    polygon(seg(s_inner), fill=st.skin)
    # eye sockets: shaded between brow and lid (the upper-lid covers below share this colour)
    sk = seg(s_socket)
    for i in range(2):
        ellipse(sk[2 * i], sk[2 * i + 1], 1.25 * eye_w, 0.75 * eye_w, st.lid)
    nf = 2 * N_BROW - 1
    fs = g.forehead_strength.tolist()
    for li_ in range(3):
        pts = sub(s_fore, li_, nf)
        for a0, a1 in ((0, 4), (3, 6), (5, 9)):
            strength = sum(fs[a0:a1]) / (a1 - a0)
            if strength > 0.05:
                line(
                    pts[2 * a0 : 2 * a1],
                    fill=_strength_colour(st.skin, st.wrinkle, strength),
                    width=px(0.012),
                )

    # eyes
    iris_r = g.iris_radius * unit
    ic = seg(s_iris)
    for i in range(2):
        polygon(sub(s_white, i, 2 * N_LID), fill=st.sclera)
        ellipse(ic[2 * i], ic[2 * i + 1], iris_r, iris_r, st.iris)
        ellipse(ic[2 * i], ic[2 * i + 1], iris_r * 0.45, iris_r * 0.45, st.pupil)
        ellipse(
            ic[2 * i] + iris_r * 0.35,
            ic[2 * i + 1] - iris_r * 0.35,
            iris_r * 0.2,
            iris_r * 0.2,
            st.catchlight,
        )
        polygon(sub(s_cup, i, 2 * N_LID), fill=st.lid)
        polygon(sub(s_clo, i, 2 * N_LID), fill=st.skin)
        line(sub(s_up, i, N_LID), fill=st.lash, width=px(0.022))
        line(sub(s_lo, i, N_LID), fill=st.crease, width=px(0.008))
        line(sub(s_crease, i, N_LID), fill=st.crease, width=px(0.01))
    # cheeks and freckles after the eyes: the lower-lid covers would clip a cheek raised by AU6
    c = seg(s_cheeks)
    for i in range(2):
        ellipse(c[2 * i], c[2 * i + 1], 0.13 * unit, 0.08 * unit, st.blush)
    if s_freck is not None:
        f = seg(s_freck)
        rf = max(0.5, 0.008 * unit)
        for i in range(0, len(f), 2):
            ellipse(f[i], f[i + 1], rf, rf, st.freckle)
    if s_hfront is not None:
        polygon(seg(s_hfront), fill=st.hair)
        if s_strands is not None:
            sw = px(0.012)
            for j in range(len(st.strands)):
                line(sub(s_strands, j, 3), fill=st.hair_dark, width=sw)

    # wrinkles and folds
    wl = px(0.014)
    if g.glabella_strength > 0.05:
        col = _strength_colour(st.skin, st.wrinkle, g.glabella_strength)
        for i in range(2):
            line(sub(s_glab, i, 2), fill=col, width=wl)
    for i in range(2):
        if g.lid_bulge_strength[i] > 0.05:
            line(
                sub(s_bulge, i, N_LID)[2:-2],
                fill=_strength_colour(st.skin, st.wrinkle, g.lid_bulge_strength[i]),
                width=wl,
            )
        if g.crows_feet_strength[i] > 0.05:
            col = _strength_colour(st.skin, st.wrinkle, g.crows_feet_strength[i])
            for j in range(3):
                line(sub(s_crow, 3 * i + j, 2), fill=col, width=wl)
        if g.nasolabial_strength[i] > 0.05:
            line(
                sub(s_nl, i, 4),
                fill=_strength_colour(st.skin, st.wrinkle, g.nasolabial_strength[i]),
                width=px(0.016),
            )
        if g.dimple_strength[i] > 0.05:
            line(
                sub(s_dimp, i, 2),
                fill=_strength_colour(st.skin, st.wrinkle, g.dimple_strength[i]),
                width=px(0.018),
            )
    if g.nose_wrinkle_strength > 0.05:
        col = _strength_colour(st.skin, st.wrinkle, g.nose_wrinkle_strength)
        for j in range(5):
            line(sub(s_nwr, j, 2), fill=col, width=wl)
    if g.chin_strength > 0.05:
        col = _strength_colour(st.skin, st.wrinkle, g.chin_strength)
        for j in range(3):
            line(sub(s_chinl, j, 2), fill=col, width=wl)
    # shadow of the lower lip on the chin (follows the lip: AU17 up, AU26 down)
    ml = seg(s_mento)
    ellipse(ml[0], ml[1], 0.085 * unit, 0.022 * unit, st.lid)
    if s_beard is not None:
        polygon(seg(s_beard), fill=st.beard)

    for i in range(2):
        polygon(sub(s_brow, i, 2 * N_BROW), fill=st.brow)

    # nose
    for i in range(2):
        line(sub(s_bridge, i, 3), fill=st.nose_line, width=px(0.012))
        line(sub(s_alae, i, 4), fill=st.nose_line, width=px(0.016))
    tx, ty = seg(s_tip)
    ellipse(tx, ty, 0.045 * unit, 0.035 * unit, st.highlight)
    n_ = seg(s_nost)
    rx, ry = g.nostril_size * unit
    for i in range(2):
        ellipse(n_[2 * i], n_[2 * i + 1], rx, ry, st.nostril)

    # mouth
    if open_mouth:
        polygon(seg(s_mouth), fill=st.mouth)
        polygon(seg(s_teeth), fill=st.teeth)
    polygon(seg(s_ulip), fill=st.lip, outline=st.lip_edge)
    polygon(seg(s_llip), fill=st.lip, outline=st.lip_edge)
    if not open_mouth:
        press = min(1.0, g.lip_press)
        line(seg(s_line), fill=_mix(st.lip_line, (20, 10, 10), press), width=px(0.014 + 0.01 * press))

    if s_glasses is not None:
        gp = seg(s_glasses)
        gw = px(0.018)
        col = identity.glasses_color
        for i in range(2):
            ring = gp[2 * 12 * i : 2 * 12 * (i + 1)]
            line(ring + ring[:2], fill=col, width=gw)
        line(gp[2 * 24 :], fill=col, width=gw)
    if s_occ is not None:
        _draw_occluder(draw, nuisance, seg(s_occ), unit, identity)

    out = img.reduce(ss)
    if nuisance.blur_sigma > 0.05:
        out = out.filter(ImageFilter.GaussianBlur(nuisance.blur_sigma * size / 64.0))
    arr = np.asarray(out, dtype=np.float32)
    gain = nuisance.brightness
    if nuisance.light_strength > 0.0:
        gx, gy = _light_grid(size)
        la = nuisance.light_angle
        gain = gain * (1.0 + nuisance.light_strength * (math.cos(la) * gx + math.sin(la) * gy))
        arr = arr * gain[:, :, None]
    elif gain != 1.0:
        arr = arr * gain
    if rng is not None and nuisance.noise_sigma > 0.0:
        oy, ox = rng.integers(0, _NOISE_TILE - size + 1, 2) if size <= _NOISE_TILE else (0, 0)
        tile = _noise_tile()
        if size <= _NOISE_TILE:
            noise = tile[oy : oy + size, ox : ox + size]
        else:
            noise = np.resize(tile, (size, size, 3))
        arr = arr + nuisance.noise_sigma * noise
    arr = np.clip(arr + 0.5, 0.0, 255.0)
    return arr.astype(np.uint8)


def _beard_polygon(idt: Identity, g: Geometry) -> np.ndarray:
    """Lower-face region covered by a beard: the jaw part of the outline plus a moustache."""
    o = g.outline
    q = N_OUTLINE // 4
    nose_y = float(g.nostrils[0, 1]) + 0.03
    if idt.beard == "goatee":
        x = idt.mouth_width + 0.06
        chin = g.chin
        return np.array(
            [
                [-x, nose_y],
                [x, nose_y],
                [x + 0.02, chin[1] - 0.2],
                [0.12, chin[1] - 0.01],
                [-0.12, chin[1] - 0.01],
                [-x - 0.02, chin[1] - 0.2],
            ]
        )
    lower = o[q - 9 : q + 10]  # image-right cheek -> chin -> image-left cheek
    # upper edge: down the cheek towards the mouth corner, then up over the upper lip (moustache)
    fw, mw, my = idt.face_width, idt.mouth_width, idt.mouth_y
    cheek_y = float(lower[0, 1]) - 0.05
    edge = np.array(
        [
            [-fw * 0.97, cheek_y],
            [-fw * 0.62, my - 0.14],
            [-(mw + 0.07), my - 0.07],
            [-0.05, nose_y],
            [0.05, nose_y],
            [mw + 0.07, my - 0.07],
            [fw * 0.62, my - 0.14],
            [fw * 0.97, cheek_y],
        ]
    )
    return np.concatenate([lower, edge])


def _glasses_points(idt: Identity, g: Geometry) -> np.ndarray:
    """Two 12-point lens rings then the bridge (3 points)."""
    ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    rx = idt.eye_size * 1.45
    ry = idt.eye_size * (1.05 if idt.glasses == "round" else 0.85)
    p = 6.0 if idt.glasses == "rect" else 2.0
    cx = np.sign(np.cos(ang)) * np.abs(np.cos(ang)) ** (2 / p)
    cy = np.sign(np.sin(ang)) * np.abs(np.sin(ang)) ** (2 / p)
    centres = np.array([[-idt.eye_spacing, idt.eye_y + 0.01], [idt.eye_spacing, idt.eye_y + 0.01]])
    rings = centres[:, None, :] + np.stack([rx * cx, ry * cy], 1)[None]
    inner = idt.eye_spacing - rx
    bridge = np.array([[-inner, idt.eye_y - 0.01], [0.0, idt.eye_y - 0.03], [inner, idt.eye_y - 0.01]])
    return np.concatenate([rings.reshape(-1, 2), bridge])


def _occluder_points(nz: Nuisance) -> np.ndarray:
    """Canonical polygon of the occluder (placed and rotated here, drawn in pixel space later)."""
    s = nz.occlusion_size
    a = math.radians(nz.occlusion_angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    if nz.occlusion == "hand":
        # palm plus four fingers, pointing along the rotated +y axis
        palm = np.array([[-0.5, 0.0], [0.5, 0.0], [0.55, 0.9], [-0.5, 1.0]])
        fingers = []
        for i, (fx, fl) in enumerate(((-0.4, 0.8), (-0.13, 0.95), (0.14, 0.9), (0.4, 0.7))):
            del i
            fingers.append([[fx - 0.12, 0.05], [fx + 0.12, 0.05], [fx + 0.1, -fl], [fx - 0.1, -fl]])
        pts = np.concatenate([palm, np.array(fingers).reshape(-1, 2)]) * s
        return pts @ rot.T + np.array([nz.occlusion_x, nz.occlusion_y])
    if nz.occlusion == "hat":
        y = -0.45 - 0.25 * abs(nz.occlusion_y - 0.35)
        return np.array([[-1.6, -1.6], [1.6, -1.6], [1.6, y], [0.0, y + 0.12], [-1.6, y]])
    if nz.occlusion == "sunglasses":
        ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        lens = np.stack([0.2 * np.cos(ang), 0.13 * np.sin(ang)], 1)
        return np.concatenate([lens + [-0.3, -0.15], lens + [0.3, -0.15], [[-0.6, -0.2], [0.6, -0.2]]])
    if nz.occlusion == "patch":
        box = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) * s * 1.3
        return box @ rot.T + np.array([nz.occlusion_x, nz.occlusion_y])
    raise UserError(f"unknown occlusion {nz.occlusion!r}; valid: None, {', '.join(OCCLUSIONS)}")


def _draw_occluder(
    draw: ImageDraw.ImageDraw, nz: Nuisance, xy: list[float], unit: float, idt: Identity
) -> None:
    if nz.occlusion == "hand":
        skin = _mix(idt.skin, (200, 150, 120), 0.3)
        edge = _scale(skin, 0.75)
        draw.polygon(xy[:8], fill=skin, outline=edge)
        for i in range(4):
            draw.polygon(xy[8 + 8 * i : 16 + 8 * i], fill=skin, outline=edge)
    elif nz.occlusion == "hat":
        draw.polygon(xy, fill=nz.occlusion_color)
    elif nz.occlusion == "sunglasses":
        dark = (15, 15, 18)
        draw.polygon(xy[:24], fill=dark)
        draw.polygon(xy[24:48], fill=dark)
        draw.line(xy[48:], fill=dark, width=max(1, int(0.03 * unit)))
    else:
        draw.polygon(xy, fill=nz.occlusion_color)
