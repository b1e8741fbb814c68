"""Each loss against a slow reference written with explicit loops, and closed forms (docs/method.md
§3, §4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clef.losses import description_name_loss, image_text_loss, masked_bce_loss, nt_xent_loss, supcon_loss


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=0))


def reference_supcon(z1, z2, labels, scale):
    views = list(z1) + list(z2)
    labs = [int(x) for x in labels] * 2
    total = 0.0
    for i in range(len(views)):
        denom = sum(math.exp(scale * _cos(views[i], views[a])) for a in range(len(views)) if a != i)
        pos = [p for p in range(len(views)) if p != i and labs[p] == labs[i]]
        total += -sum(math.log(math.exp(scale * _cos(views[i], views[p])) / denom) for p in pos) / len(pos)
    return total / len(views)


def reference_image_text(img, txt, labels, scale):
    b, k = img.shape[0], txt.shape[0]
    i2t = 0.0
    for i in range(b):
        denom = sum(math.exp(scale * _cos(img[i], txt[c])) for c in range(k))
        i2t += -math.log(math.exp(scale * _cos(img[i], txt[int(labels[i])])) / denom)
    i2t /= b
    t2i, present = 0.0, 0
    for c in range(k):
        pos = [i for i in range(b) if int(labels[i]) == c]
        if not pos:
            continue
        present += 1
        denom = sum(math.exp(scale * _cos(txt[c], img[j])) for j in range(b))
        t2i += -sum(math.log(math.exp(scale * _cos(txt[c], img[p])) / denom) for p in pos) / len(pos)
    return 0.5 * (i2t + t2i / present)


def reference_dn(desc, name, scale):
    c = desc.shape[0]
    total = 0.0
    for a in range(c):
        d_den = sum(math.exp(scale * _cos(desc[a], name[j])) for j in range(c))
        n_den = sum(math.exp(scale * _cos(name[a], desc[j])) for j in range(c))
        total += -math.log(math.exp(scale * _cos(desc[a], name[a])) / d_den)
        total += -math.log(math.exp(scale * _cos(name[a], desc[a])) / n_den)
    return total / (2 * c)


@pytest.mark.parametrize("seed", [0, 1])
def test_supcon_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    z1, z2 = (
        torch.randn(10, 6, generator=g, dtype=torch.float64),
        torch.randn(10, 6, generator=g, dtype=torch.float64),
    )
    labels = torch.randint(0, 3, (10,), generator=g)
    got = supcon_loss(z1, z2, labels, logit_scale=7.0)
    assert got.item() == pytest.approx(reference_supcon(z1, z2, labels, 7.0), rel=1e-9)


def test_supcon_accepts_tensor_scale_and_gives_it_a_gradient():
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    scale = torch.tensor(5.0, requires_grad=True)
    supcon_loss(z1, z2, torch.tensor([0, 0, 1, 1, 2, 2]), scale).backward()
    assert scale.grad is not None and torch.isfinite(scale.grad)


def test_nt_xent_matches_reference_with_unique_labels():
    g = torch.Generator().manual_seed(3)
    z1, z2 = (
        torch.randn(8, 5, generator=g, dtype=torch.float64),
        torch.randn(8, 5, generator=g, dtype=torch.float64),
    )
    got = nt_xent_loss(z1, z2, temperature=0.2)
    assert got.item() == pytest.approx(reference_supcon(z1, z2, torch.arange(8), 5.0), rel=1e-9)


def test_supcon_closed_form_for_aligned_embeddings():
    # K = 3 orthogonal activities, n = 4 frames each, both views identical to the activity's axis.
    k, n, s = 3, 4, 10.0
    labels = torch.arange(k).repeat_interleave(n)
    z = F.one_hot(labels, 5).double()
    b = k * n
    expected = math.log((2 * n - 1) * math.exp(s) + 2 * (b - n)) - s
    assert supcon_loss(z, z.clone(), labels, s).item() == pytest.approx(expected, rel=1e-12)


def test_nt_xent_closed_form_for_orthogonal_frames():
    b, tau = 6, 0.5
    z = torch.eye(b, dtype=torch.float64)
    expected = math.log(math.exp(1 / tau) + 2 * b - 2) - 1 / tau
    assert nt_xent_loss(z, z.clone(), temperature=tau).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("labels", [[0, 1, 2, 0, 1, 2, 0], [1, 1, 3, 3, 3, 1, 1]])
def test_image_text_matches_reference(labels):
    g = torch.Generator().manual_seed(5)
    img = torch.randn(7, 6, generator=g, dtype=torch.float64)
    txt = torch.randn(4, 6, generator=g, dtype=torch.float64)
    labels = torch.tensor(labels)
    got = image_text_loss(img, txt, labels, logit_scale=4.0)
    assert got.item() == pytest.approx(reference_image_text(img, txt, labels, 4.0), rel=1e-9)


def test_image_text_closed_form_for_aligned_embeddings():
    # Every image equals its activity text; texts orthogonal; n images per activity.
    k, n, s = 4, 3, 8.0
    labels = torch.arange(k).repeat_interleave(n)
    txt = torch.eye(k, dtype=torch.float64)
    img = txt[labels]
    i2t = math.log(math.exp(s) + (k - 1)) - s
    t2i = math.log(n * math.exp(s) + (k * n - n)) - s
    assert image_text_loss(img, txt, labels, s).item() == pytest.approx(0.5 * (i2t + t2i), rel=1e-12)


def test_image_text_rejects_label_out_of_range():
    with pytest.raises(ValueError, match="labels must lie"):
        image_text_loss(torch.randn(3, 4), torch.randn(2, 4), torch.tensor([0, 1, 2]), 1.0)


def test_description_name_matches_reference_and_closed_form():
    g = torch.Generator().manual_seed(7)
    d, n = (
        torch.randn(5, 8, generator=g, dtype=torch.float64),
        torch.randn(5, 8, generator=g, dtype=torch.float64),
    )
    assert description_name_loss(d, n, 3.0).item() == pytest.approx(reference_dn(d, n, 3.0), rel=1e-9)
    e = torch.eye(5, dtype=torch.float64)
    expected = math.log(math.exp(3.0) + 4) - 3.0
    assert description_name_loss(e, e, 3.0).item() == pytest.approx(expected, rel=1e-12)


def test_losses_are_invariant_to_embedding_norm():
    z1, z2, labels = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    a = supcon_loss(z1, z2, labels, 5.0)
    b = supcon_loss(3 * z1, 0.5 * z2, labels, 5.0)
    assert torch.allclose(a, b, atol=1e-6)


def test_losses_compute_in_fp32_under_autocast():
    z1, z2, labels = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    plain = supcon_loss(z1, z2, labels, 50.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = supcon_loss(z1, z2, labels, 50.0)
        it = image_text_loss(z1, z2[:3], labels, 50.0)
    assert auto.dtype == torch.float32 and it.dtype == torch.float32
    assert auto.item() == pytest.approx(plain.item(), rel=1e-6)


def test_masked_bce_against_hand_computed_value():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[True, False], [True, True]])
    pos_weight = torch.tensor([2.0, 1.0])
    # Coded: (0,0) positive with weight 2; (1,0) negative; (1,1) positive with weight 1.
    expected = (2 * math.log(2) + math.log(1 + math.exp(-1)) + math.log(2)) / 3
    loss = masked_bce_loss(logits, targets, mask, pos_weight)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad[0, 1] == 0  # an uncoded label gets no gradient
    # Without weights: plain BCE averaged over the three coded labels.
    assert masked_bce_loss(logits, targets, mask).item() == pytest.approx(
        (3 * math.log(2) + math.log(1 + math.exp(-1)) - math.log(2)) / 3, rel=1e-6
    )


def test_masked_bce_with_nothing_coded_is_zero_and_attached():
    logits = torch.randn(3, 2, requires_grad=True)
    loss = masked_bce_loss(logits, torch.ones(3, 2), torch.zeros(3, 2, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
