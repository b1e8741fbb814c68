import pytest
import torch

from clef.prep.nms import batched_nms, nms


def slow_nms(boxes, scores, threshold, mode):
    """Textbook greedy NMS on Python floats."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        ok = True
        for j in keep:
            x1, y1 = max(boxes[i][0], boxes[j][0]), max(boxes[i][1], boxes[j][1])
            x2, y2 = min(boxes[i][2], boxes[j][2]), min(boxes[i][3], boxes[j][3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            ai = (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])
            aj = (boxes[j][2] - boxes[j][0]) * (boxes[j][3] - boxes[j][1])
            overlap = inter / (ai + aj - inter) if mode == "union" else inter / min(ai, aj)
            if overlap > threshold:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def random_boxes(n, generator):
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 100
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 40 + 1
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("mode", ["union", "min"])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_slow_reference(mode, threshold):
    g = torch.Generator().manual_seed(int(threshold * 10) + (mode == "min"))
    for n in (1, 7, 60, 300):
        boxes, scores = random_boxes(n, g), torch.rand(n, generator=g, dtype=torch.float64)
        got = nms(boxes, scores, threshold, mode).tolist()
        assert got == slow_nms(boxes.tolist(), scores.tolist(), threshold, mode)


def test_batched_nms_is_nms_per_group():
    g = torch.Generator().manual_seed(0)
    boxes, scores = random_boxes(200, g), torch.rand(200, generator=g)
    groups = torch.randint(0, 4, (200,), generator=g)
    got = set(batched_nms(boxes, scores, groups, 0.5).tolist())
    expected = set()
    for k in range(4):
        members = torch.nonzero(groups == k).squeeze(1)
        expected |= {
            int(members[i]) for i in slow_nms(boxes[members].tolist(), scores[members].tolist(), 0.5, "union")
        }
    assert got == expected


def test_nms_empty_and_identical_boxes():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    same = torch.tensor([[0.0, 0, 10, 10]] * 3)
    assert nms(same, torch.tensor([0.2, 0.9, 0.5]), 0.5).tolist() == [1]
    # A small box inside a large one survives IoU but not intersection-over-minimum.
    nested = torch.tensor([[0.0, 0, 100, 100], [10.0, 10, 30, 30]])
    assert nms(nested, torch.tensor([0.9, 0.8]), 0.5, "union").tolist() == [0, 1]
    assert nms(nested, torch.tensor([0.9, 0.8]), 0.5, "min").tolist() == [0]
