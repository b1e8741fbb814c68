from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clef.data.dataset import ImageRecords
from clef.data.records import make_records


@pytest.fixture()
def records(tmp_path):
    paths = []
    for i in range(3):
        arr = np.zeros((20, 30, 3), dtype=np.uint8)
        arr[..., i] = 200  # image i is pure channel i
        p = tmp_path / f"img{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    return make_records(
        {
            "path": paths,
            "subject": ["S1", "S1", "S2"],
            "activity": ["T1", pd.NA, "T2"],
            "expression": ["happiness", "neutral", pd.NA],
            "AU1": [1.0, 0.0, np.nan],
            "AU12": [np.nan, 1.0, 0.0],
        },
        3,
    )


def test_items_have_image_and_requested_labels(records):
    ds = ImageRecords(records, image_size=16, aus=(1, 12), activities=["T1", "T2"])
    assert len(ds) == 3
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.uint8
    assert item["image"][0].float().mean() == pytest.approx(200, abs=1) and item["image"][1].max() == 0
    assert item["index"].item() == 0
    assert torch.equal(item["au"], torch.tensor([1.0, 0.0])) and torch.equal(
        item["au_mask"], torch.tensor([True, False])
    )
    assert item["expression"].item() == 1 and item["activity"].item() == 0
    assert ds[1]["activity"].item() == -1 and ds[2]["expression"].item() == -1
    assert torch.equal(ds[2]["au_mask"], torch.tensor([False, True]))


def test_only_requested_labels_and_default_collate(records):
    ds = ImageRecords(records, image_size=8, expressions=None)
    assert set(ds[0]) == {"image", "index"}
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 8, 8)


def test_unknown_vocabulary_value_is_an_error(records):
    with pytest.raises(ValueError, match=r"activity values \['T2'\] are not in the vocabulary: T1"):
        ImageRecords(records, image_size=8, activities=["T1"])
    with pytest.raises(KeyError):
        ImageRecords(records, image_size=8, aus=(4,))
