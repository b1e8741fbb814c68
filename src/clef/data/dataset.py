"""One torch Dataset for every record table (:mod:`clef.data.records`): decode, resize, labels.

The Dataset never augments: augmentation runs batched on the training device (:mod:`clef.augment`),
so loader workers only decode JPEG/PNG files. Labels are turned into arrays once, at construction,
so ``__getitem__`` does no pandas work and the object pickles cheaply into worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from clef.data.records import au_targets
from clef.errors import UserError
from clef.labels import EXPRESSIONS

__all__ = ["ImageRecords", "square_image"]


class ImageRecords(torch.utils.data.Dataset):
    """Images of a record table with the labels a stage asks for.

    Args:
        records: a record table (columns ``path``, ``activity``, ``expression``, ``AU<n>``, ...).
        image_size: images are resized to ``image_size × image_size`` (bilinear, Pillow).
        aus: AU numbers whose occurrence targets and masks to return (``au``, ``au_mask``), or None.
        expressions: class names in index order for ``expression`` (default
            :data:`clef.labels.EXPRESSIONS`), or None to return no expression label.
        activities: activity names in index order for ``activity``, or None to return none.

    Items (a dict of tensors; the default collate stacks them):
        ``image``: uint8 (3, S, S); ``index``: int64, the row of ``records``;
        ``au``: float32 (J,) 1/0, 0 where not coded; ``au_mask``: bool (J,), True where coded;
        ``expression``: int64, -1 when NA; ``activity``: int64, -1 when NA.

    Raises:
        KeyError: a requested AU column is missing.
        ValueError: an expression or activity of the table is not in the given vocabulary.
    """

    def __init__(
        self,
        records: pd.DataFrame,
        image_size: int,
        aus: Sequence[int] | None = None,
        expressions: Sequence[str] | None = EXPRESSIONS,
        activities: Sequence[str] | None = None,
    ) -> None:
        self.paths: list[str] = [str(p) for p in records["path"]]
        self.image_size = int(image_size)
        self.aus = tuple(aus) if aus is not None else None
        self._au = self._au_mask = None
        if self.aus is not None:
            self._au, self._au_mask = au_targets(records, self.aus)
        self._expression = (
            None if expressions is None else _indices(records["expression"], expressions, "expression")
        )
        self._activity = None if activities is None else _indices(records["activity"], activities, "activity")

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, i: int) -> torch.Tensor:
        """uint8 (3, S, S) RGB image of row ``i``.

        Raises:
            UserError: the file is missing or cannot be decoded (naming it and the row); in a
                DataLoader worker too, where it reaches the main process as the same one line.
        """
        try:
            with Image.open(self.paths[i]) as im:
                array = square_image(im.convert("RGB"), self.image_size)
        except FileNotFoundError:
            raise UserError(f"image of record {i} of {len(self)} not found", file=self.paths[i]) from None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            # OSError covers truncated files too; `clef data check` finds them all before a run.
            reason = "not an image Pillow can identify" if isinstance(err, UnidentifiedImageError) else err
            raise UserError(
                f"cannot read the image of record {i} of {len(self)} ({reason}); "
                "`clef data check` lists all bad images",
                file=self.paths[i],
            ) from None
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"image": self.load_image(i), "index": torch.tensor(i, dtype=torch.int64)}
        if self._au is not None:
            item["au"] = torch.from_numpy(self._au[i])
            item["au_mask"] = torch.from_numpy(self._au_mask[i])
        if self._expression is not None:
            item["expression"] = torch.tensor(self._expression[i], dtype=torch.int64)
        if self._activity is not None:
            item["activity"] = torch.tensor(self._activity[i], dtype=torch.int64)
        return item


def square_image(image: Image.Image, size: int) -> np.ndarray:
    """An RGB image as the model sees it: resized to ``size × size`` (bilinear, Pillow) unless it already
    is, as a writable (size, size, 3) uint8 array. Training, evaluation and ``clef predict`` all resize
    through this, so the same file gives the same pixels everywhere."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).copy()


def _indices(column: pd.Series, vocabulary: Sequence[str], what: str) -> np.ndarray:
    """Index of each value in ``vocabulary``; -1 for NA; ValueError listing unknown values."""
    lookup = {name: k for k, name in enumerate(vocabulary)}
    values = column.astype(object).where(column.notna(), None).tolist()
    unknown = sorted({v for v in values if v is not None and v not in lookup})
    if unknown:
        raise ValueError(f"{what} values {unknown} are not in the vocabulary: {', '.join(vocabulary)}")
    return np.array([-1 if v is None else lookup[v] for v in values], dtype=np.int64)
