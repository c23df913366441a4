"""Training losses: AP against a brute-force AP, repeatability terms, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fundusfeat.training.losses import (
    Correspondences,
    binned_ap,
    correspondences,
    cosim_loss,
    descriptor_terms,
    mutual_nn_accuracy,
    peaky_loss,
    reliability_bce,
    reliability_loss,
    warp_to_first,
)


def sorted_ap(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision by sorting (ties broken pessimistically)."""
    order = np.lexsort((positive, -scores))  # by score desc, negatives first within ties
    rel = positive[order]
    hits = np.cumsum(rel)
    prec = hits / np.arange(1, len(rel) + 1)
    return float((prec * rel).sum() / max(rel.sum(), 1))


@given(seed=st.integers(0, 10_000), m=st.integers(2, 12))
def test_binned_ap_equals_sorted_ap_on_bin_centres(seed: int, m: int) -> None:
    bins = 25
    rng = np.random.default_rng(seed)
    centres = 1.0 - np.arange(bins) * 2.0 / (bins - 1)
    scores = rng.choice(centres, size=m, replace=False)
    positive = rng.random(m) < 0.4
    positive[rng.integers(m)] = True
    got = binned_ap(
        torch.tensor(scores), torch.tensor(positive), torch.ones(m, dtype=torch.bool), bins
    )
    assert float(got) == pytest.approx(sorted_ap(scores, positive), abs=1e-9)


@given(seed=st.integers(0, 10_000))
def test_binned_ap_close_to_sorted_ap_and_in_unit_interval(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.uniform(-1, 1, size=(4, 30))
    positive = rng.random((4, 30)) < 0.3
    positive[:, 0] = True
    got = binned_ap(
        torch.tensor(scores), torch.tensor(positive), torch.ones(4, 30, dtype=bool), 200
    ).numpy()
    want = np.array([sorted_ap(s, p) for s, p in zip(scores, positive, strict=True)])
    assert np.all((got >= 0) & (got <= 1 + 1e-9))
    assert np.abs(got - want).max() < 0.1


def test_binned_ap_ignores_invalid_candidates() -> None:
    scores = torch.tensor([0.5, 1.0, 0.0])
    positive = torch.tensor([True, False, False])
    valid = torch.tensor([True, False, True])
    assert float(binned_ap(scores, positive, valid, 5)) == pytest.approx(1.0)
    assert float(binned_ap(scores, positive, torch.ones(3, dtype=bool), 5)) == pytest.approx(0.5)


def test_binned_ap_gradcheck() -> None:
    scores = torch.tensor([[0.31, -0.2, 0.77, 0.05]], dtype=torch.float64, requires_grad=True)
    pos = torch.tensor([[True, False, False, True]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda s: binned_ap(s, pos, valid, 9), (scores,))


def _identity_corr(n: int, b: int = 1) -> Correspondences:
    xy = torch.arange(n, dtype=torch.float32)[None, :, None].repeat(b, 1, 2) * 8
    return Correspondences(xy, xy.clone(), torch.ones(b, n, dtype=torch.bool))


@pytest.mark.parametrize("kind", ["ap", "infonce"])
def test_perfect_descriptors_give_top_quality(kind: str) -> None:
    d = torch.eye(20)[None]  # orthogonal unit descriptors
    quality, ce, acc = descriptor_terms(
        d, d, _identity_corr(20), kind, temperature=0.05, bins=25, ignore_radius=0.0
    )
    assert float(quality.min()) > 0.99
    assert float(acc) == 1.0
    if kind == "ap":
        loss = reliability_loss(quality, torch.ones_like(quality), 0.5).mean()
        assert float(loss) == pytest.approx(0.0, abs=1e-6)
    else:
        assert float(ce) < 0.01


def test_shuffled_descriptors_give_low_quality() -> None:
    d1 = torch.eye(20)[None]
    d2 = d1[:, torch.randperm(20, generator=torch.Generator().manual_seed(0))]
    quality, _, acc = descriptor_terms(
        d1, d2, _identity_corr(20), "ap", temperature=0.05, bins=25, ignore_radius=0.0
    )
    assert float(quality.mean()) < 0.5
    assert float(acc) < 0.3


@pytest.mark.parametrize("kind", ["ap", "infonce"])
def test_descriptor_gradients_finite(kind: str) -> None:
    d1 = torch.randn(2, 30, 8, requires_grad=True)
    d2 = torch.randn(2, 30, 8, requires_grad=True)
    n1, n2 = torch.nn.functional.normalize(d1, dim=-1), torch.nn.functional.normalize(d2, dim=-1)
    corr = _identity_corr(30, b=2)
    corr = Correspondences(corr.xy1, corr.xy2, corr.valid.clone())
    corr.valid[0, :5] = False
    quality, ce, _ = descriptor_terms(
        n1, n2, corr, kind, temperature=0.1, bins=10, ignore_radius=4.0
    )
    (quality.sum() + ce).backward()
    assert torch.isfinite(d1.grad).all() and torch.isfinite(d2.grad).all()
    assert float(d1.grad.abs().sum()) > 0


def test_reliability_loss_form() -> None:
    q = torch.tensor([1.0, 0.0, 0.5])
    r = torch.tensor([1.0, 0.0, 1.0])
    assert reliability_loss(q, r, 0.5).tolist() == pytest.approx([0.0, 0.5, 0.5])


def test_repeatability_terms() -> None:
    rep = torch.rand(2, 1, 32, 32)
    valid = torch.ones(2, 1, 32, 32)
    assert float(cosim_loss(rep, rep, valid, 8)) == pytest.approx(0.0, abs=1e-5)
    assert float(cosim_loss(rep, 1 - rep, valid, 8)) > 0.05
    flat = torch.full((1, 1, 32, 32), 0.5)
    peaks = torch.zeros(1, 1, 32, 32)
    peaks[..., 4::8, 4::8] = 1.0
    one = torch.ones(1, 1, 32, 32)
    assert float(peaky_loss(flat, one, 8)) == pytest.approx(1.0)
    assert float(peaky_loss(peaks, one, 8)) < float(peaky_loss(flat, one, 8))


def test_warp_to_first() -> None:
    H = torch.tensor([[[1.0, 0, 3], [0, 1, -2], [0, 0, 1]]])
    img2 = torch.arange(100, dtype=torch.float32).view(1, 1, 10, 10)
    back = warp_to_first(img2, H, 4, 5)
    assert float(back[0, 0, 3, 1]) == pytest.approx(float(img2[0, 0, 1, 4]))  # (x=1,y=3)->(4,1)


def test_correspondences_validity() -> None:
    H = torch.eye(3)[None].clone()
    H[0, 0, 2] = 20.0  # shift right by 20 px
    valid = torch.ones(1, 1, 32, 32)
    corr = correspondences(H, valid, valid, 8, (4.0, 4.0))
    assert corr.xy1.shape == (1, 16, 2)
    inside = corr.xy1[0, :, 0] + 20 <= 31
    assert torch.equal(corr.valid[0], inside)


def test_mutual_nn_accuracy_counts_only_valid() -> None:
    sim = torch.eye(4)[None]
    valid = torch.tensor([[True, True, False, False]])
    assert float(mutual_nn_accuracy(sim, valid)) == 1.0


def test_reliability_bce_minimum_at_quality() -> None:
    q = torch.tensor([0.2, 0.9])
    r = torch.linspace(0.01, 0.99, 99)[:, None].expand(99, 2)
    best = r[reliability_bce(q.expand(99, 2), r).argmin(0), [0, 1]]
    assert best.tolist() == pytest.approx([0.2, 0.9], abs=0.011)
    r0 = torch.tensor([1e-4], requires_grad=True)
    reliability_bce(torch.tensor([0.8]), r0).sum().backward()
    assert float(r0.grad) < -100  # strong push up even when R has collapsed


def test_centered_cosim_penalises_misaligned_peaks() -> None:
    a = torch.full((1, 1, 16, 16), 0.2)
    b = a.clone()
    a[..., 3, 3] = 1.0
    b[..., 12, 10] = 1.0
    valid = torch.ones_like(a)
    assert float(cosim_loss(a, b, valid, 16)) < 0.1  # the paper's form barely notices
    assert float(cosim_loss(a, b, valid, 16, centered=True)) > 0.9
    assert float(cosim_loss(a, a, valid, 16, centered=True)) == pytest.approx(0.0, abs=1e-5)
