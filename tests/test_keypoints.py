"""Tests for fundusfeat.features.keypoints: NMS, selection, refinement, sampling, multi-scale."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from hypothesis import given
from hypothesis import strategies as st

from fundusfeat.features.checkpoint import load_network
from fundusfeat.features.keypoints import (
    _erode_counting,
    _nms_cv2,
    _nms_torch,
    _top_k_per_image,
    describe_at,
    erode_mask,
    extract_multiscale,
    nms,
    pyramid_scales,
    sample_descriptors,
    select_keypoints,
    smooth_map,
    subpixel_refine,
)
from fundusfeat.features.tensors import to_tensor

from .conftest import DEFAULT_MODEL


def _peaks(h: int, w: int, points: list[tuple[int, int]], sigma: float = 1.5) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = torch.zeros(1, 1, h, w)
    for x, y in points:
        out[0, 0] += torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return out


class TestNms:
    def test_known_answer(self):
        rep = _peaks(20, 30, [(5, 6), (20, 12)])
        ys, xs = nms(rep)[0, 0].nonzero(as_tuple=True)
        assert sorted(zip(xs.tolist(), ys.tolist(), strict=True)) == [(5, 6), (20, 12)]

    def test_flat_map_has_no_maxima(self):
        assert not nms(torch.full((2, 1, 10, 10), 0.5)).any()

    @given(
        seed=st.integers(0, 10_000),
        kernel=st.sampled_from([1, 3, 5]),
        levels=st.sampled_from([4, 50, 0]),
    )
    def test_cv2_path_equals_the_separable_filters(self, seed, kernel, levels):
        # plateaus (few grey levels), ties at the borders, two maps in a batch
        rng = np.random.default_rng(seed)
        rep = torch.from_numpy(rng.random((2, 1, 13, 17)).astype(np.float32))
        if levels:
            rep = torch.floor(rep * levels) / levels
        assert torch.equal(_nms_cv2(rep, kernel), _nms_torch(rep, kernel))
        assert torch.equal(nms(rep, kernel), _nms_torch(rep, kernel))

    def test_exceptions(self):
        with pytest.raises(ValueError, match="rep"):
            nms(torch.zeros(1, 2, 5, 5))
        with pytest.raises(ValueError, match="kernel"):
            nms(torch.zeros(1, 1, 5, 5), kernel=2)


class TestSelectKeypoints:
    def test_thresholds_mask_topk(self):
        rep = torch.cat([_peaks(20, 30, [(5, 6), (20, 12), (25, 3)])] * 2).clamp(max=1)
        rel = torch.ones_like(rep)
        rel[..., :, 22:] = 0.1  # kills (25, 3)
        valid = torch.ones_like(rep, dtype=torch.bool)
        valid[1, :, :, :10] = False  # kills (5, 6) in image 1
        cand = select_keypoints(rep, rel, valid, 0.5, 0.5, max_keypoints=5)
        assert cand.batch.tolist() == [0, 0, 1]
        assert cand.xy.tolist()[2] == [20, 12]
        top1 = select_keypoints(rep, rel, None, 0.5, 0.5, max_keypoints=1)
        assert top1.batch.tolist() == [0, 1]

    def test_shape_exception(self):
        with pytest.raises(ValueError, match="rel"):
            select_keypoints(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 5, 6), None)


class TestSubpixel:
    @given(dx=st.floats(-0.45, 0.45), dy=st.floats(-0.45, 0.45))
    def test_recovers_quadratic_peak(self, dx, dy):
        ys, xs = torch.meshgrid(torch.arange(9.0), torch.arange(11.0), indexing="ij")
        rep = (1.0 - 0.05 * ((xs - 5 - dx) ** 2 + 2 * (ys - 4 - dy) ** 2))[None, None]
        out = subpixel_refine(rep, torch.tensor([[5, 4]]))
        torch.testing.assert_close(out, torch.tensor([[5 + dx, 4 + dy]]), atol=1e-4, rtol=0)

    def test_clipped_and_flat(self):
        rep = torch.zeros(1, 1, 5, 5)
        rep[0, 0, 2, 3] = 1.0
        out = subpixel_refine(rep, torch.tensor([[2, 2], [0, 0]]))
        assert (out - torch.tensor([[2.0, 2.0], [0.0, 0.0]])).abs().max() <= 0.5

    def test_edges_as_if_replicated(self):
        # peaks on the image's edge see their edge pixels repeated beyond it
        gen = torch.Generator().manual_seed(3)
        rep = torch.rand(2, 1, 6, 7, generator=gen)
        xy = torch.tensor([[0, 0], [6, 5], [3, 0], [0, 2], [6, 3], [2, 5], [3, 2]])
        batch = torch.tensor([0, 1, 0, 1, 0, 1, 1])
        padded = F.pad(rep, (1, 1, 1, 1), mode="replicate")
        inner = subpixel_refine(padded, xy + 1, batch) - 1  # no point on padded's edge
        torch.testing.assert_close(subpixel_refine(rep, xy, batch), inner, atol=1e-6, rtol=0)


class TestSampleDescriptors:
    @pytest.mark.parametrize("stride", [1, 8])
    def test_pixel_centre_mapping(self, stride):
        desc = F.normalize(
            torch.randn(2, 16, 6, 7, generator=torch.Generator().manual_seed(0)), dim=1
        )
        xy = torch.tensor([[0.0, 0.0], [3 * stride, 2 * stride], [6 * stride, 5 * stride]])
        out = sample_descriptors(desc, xy, stride, batch=torch.tensor([0, 1, 1]))
        torch.testing.assert_close(out[0], desc[0, :, 0, 0])
        torch.testing.assert_close(out[1], desc[1, :, 2, 3])
        torch.testing.assert_close(out[2], desc[1, :, 5, 6])

    def test_unit_norm_and_gradcheck(self):
        desc = torch.randn(1, 4, 5, 5, dtype=torch.float64, requires_grad=True)
        xy = torch.tensor([[1.3, 2.7], [3.1, 0.4]], dtype=torch.float64)
        out = sample_descriptors(desc, xy, 1)
        torch.testing.assert_close(out.norm(dim=1), torch.ones(2, dtype=torch.float64))
        assert torch.autograd.gradcheck(lambda d: sample_descriptors(d, xy, 1), (desc,))


def test_erode_mask():
    valid = torch.ones(1, 1, 10, 10, dtype=torch.bool)
    out = erode_mask(valid, 2)
    assert out.sum() == 36 and out[0, 0, 2:8, 2:8].all()


def test_pyramid_scales():
    scales = pyramid_scales(768, 768, min_scale=1 / 3)
    assert scales[0] == 1.0 and len(scales) == 7 and scales[-1] >= 1 / 3
    assert pyramid_scales(768, 768) == [1.0]  # the default: one scale
    assert pyramid_scales(36, 36, min_size=32) == [1.0]
    with pytest.raises(ValueError, match="scale_f"):
        pyramid_scales(100, 100, scale_f=1.0)


@pytest.fixture(scope="module")
def fast_net():
    return load_network(DEFAULT_MODEL, device="cpu")


class TestExtractMultiscale:
    def test_shapes_and_ranges(self, fast_net, retina):
        img = to_tensor(retina[::2, ::2].copy())
        (f,) = extract_multiscale(fast_net, img, rep_thr=0.0, rel_thr=0.0, max_keypoints=200)
        n = len(f.xy)
        assert 0 < n <= 200
        assert f.desc.shape == (n, 128) and f.desc.dtype == torch.float32
        torch.testing.assert_close(f.desc.norm(dim=1), torch.ones(n))
        assert (f.score[:-1] >= f.score[1:]).all()
        h, w = img.shape[-2:]
        assert (f.xy >= 0).all() and (f.xy[:, 0] <= w - 1).all() and (f.xy[:, 1] <= h - 1).all()
        levels = torch.tensor(pyramid_scales(h, w, min_scale=1.0), dtype=torch.float32)
        assert torch.isin(f.scale, levels).all()

    def test_valid_mask_respected(self, fast_net, retina):
        img = to_tensor(retina[::2, ::2].copy())
        valid = torch.zeros(1, 1, *img.shape[-2:], dtype=torch.bool)
        valid[..., 40:150, 30:120] = True
        (f,) = extract_multiscale(fast_net, img, valid, rep_thr=0.0, rel_thr=0.0)
        assert len(f.xy) > 0
        xi, yi = f.xy.round().long().unbind(1)
        assert valid[0, 0, yi, xi].all()

    def test_describe_at_matches_extraction(self, fast_net, retina):
        img = to_tensor(retina[::2, ::2].copy())
        (f,) = extract_multiscale(fast_net, img, rep_thr=0.0, rel_thr=0.0, max_keypoints=50)
        desc = describe_at(fast_net, img, f.xy, f.scale)
        torch.testing.assert_close(desc, f.desc, atol=1e-4, rtol=0)

    def test_batch_equals_single(self, fast_net, retina):
        a = to_tensor(retina[::2, ::2].copy())
        b = to_tensor(np.ascontiguousarray(retina[::2, ::2][::-1]))
        both = extract_multiscale(fast_net, torch.cat([a, b]), rep_thr=0.0, rel_thr=0.0)
        single = extract_multiscale(fast_net, b, rep_thr=0.0, rel_thr=0.0)[0]
        assert len(both[1].xy) == len(single.xy)
        # batched and single convolutions differ in the last bits: near-equal scores may
        # swap places, and a plateau's maximum may move by one pixel (thresholds are 0
        # here, so every flat spot is a keypoint). Compare the keypoints as sets: the
        # distance from each single-run keypoint to the nearest batched one.
        diff = torch.cdist(single.xy, both[1].xy, compute_mode="donot_use_mm_for_euclid_dist")
        diff = diff.amin(dim=1)
        assert (diff < 1e-3).float().mean() > 0.99
        assert diff.max() <= 1.0


@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_max_filter_equals_max_pool(k: int) -> None:
    from fundusfeat.features.keypoints import _rank_filter

    x = torch.rand(2, 1, 37, 41, generator=torch.Generator().manual_seed(k))
    padded = F.pad(x, (k // 2,) * 4, mode="replicate")
    ref = F.max_pool2d(padded, k, stride=1)
    assert torch.equal(_rank_filter(padded, k, torch.maximum), ref)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_min_filter_equals_negated_max_pool(k: int) -> None:
    from fundusfeat.features.keypoints import _rank_filter

    x = torch.rand(2, 1, 37, 41, generator=torch.Generator().manual_seed(k))
    ref = -F.max_pool2d(F.pad(-x, (k // 2,) * 4, mode="replicate"), k, stride=1)
    padded = F.pad(x, (k // 2,) * 4, mode="replicate")
    assert torch.equal(_rank_filter(padded, k, torch.minimum), ref)


@pytest.mark.parametrize("border", [1, 4, 7])
def test_erode_mask_equals_max_pool_erosion(border: int) -> None:
    valid = torch.rand(3, 1, 40, 50, generator=torch.Generator().manual_seed(border)) > 0.02
    pad = (border,) * 4
    ref = F.max_pool2d(F.pad((~valid).float(), pad, value=1.0), 2 * border + 1, stride=1) == 0
    assert torch.equal(erode_mask(valid, border), ref)  # cv2 on the CPU
    assert torch.equal(_erode_counting(valid, border), ref)  # other devices


def test_pixel_to_grid_maps_cell_centres() -> None:
    from fundusfeat.features.keypoints import pixel_to_grid

    # stride 8, a 4 x 5 map: input pixel x = 8 j is feature coordinate u = j, the centre
    # of cell j, normalised (2 j + 1) / w - 1
    xy = torch.tensor([[0.0, 0.0], [32.0, 24.0]])
    grid = pixel_to_grid(xy, 8, (4, 5))
    expected = torch.tensor([[1 / 5 - 1, 1 / 4 - 1], [9 / 5 - 1, 7 / 4 - 1]])
    torch.testing.assert_close(grid, expected)


class TestSmoothMap:
    def test_matches_kornia_and_keeps_constants(self):
        import kornia

        maps = torch.rand(2, 1, 37, 41, generator=torch.Generator().manual_seed(0))
        for sigma in (0.7, 1.0, 1.5):
            k = 2 * int(np.ceil(3 * sigma)) + 1
            want = kornia.filters.gaussian_blur2d(maps, (k, k), (sigma, sigma), "replicate")
            got = smooth_map(maps, sigma)
            assert got.shape == maps.shape and got.dtype == torch.float32
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        flat = torch.full((1, 1, 9, 12), 0.25)
        torch.testing.assert_close(smooth_map(flat, 1.0), flat, atol=1e-7, rtol=0)
        assert smooth_map(maps, 0.0) is maps

    def test_peak_stays_and_spreads(self):
        rep = torch.zeros(1, 1, 21, 21)
        rep[0, 0, 10, 7] = 1.0
        out = smooth_map(rep, 1.0)[0, 0]
        assert out.argmax().item() == 10 * 21 + 7
        assert abs(out.sum().item() - 1.0) < 1e-5 and out[10, 8] > 0.5 * out[10, 7]

    @pytest.mark.parametrize("sigma", [-0.5, float("nan"), float("inf")])
    def test_rejects_bad_sigma(self, sigma):
        with pytest.raises(ValueError, match="sigma"):
            smooth_map(torch.zeros(1, 1, 4, 4), sigma)


def test_smoothing_makes_keypoints_follow_a_resampled_shift(demo_pair):
    """The demo photograph at a 700-px FOV is enlarged to the working scale, so a
    whole-pixel shift of the input is a sub-pixel one for the network: the default
    smoothing finds more keypoints again than the raw repeatability."""
    from fundusfeat import R2D2Fundus
    from fundusfeat.evaluation.shift import shift_repeatability

    img = cv2.resize(demo_pair[0], (700, 700), interpolation=cv2.INTER_AREA)
    shifts = [(1, 0), (3, 1), (2, 3)]
    smooth = R2D2Fundus.create(model=DEFAULT_MODEL, device="cpu")
    raw = R2D2Fundus.create(model=DEFAULT_MODEL, device="cpu", rep_blur=0.0, rel_thr=0.5)
    with_blur = shift_repeatability(smooth, img, shifts)
    without = shift_repeatability(raw, img, shifts)
    assert with_blur.min() >= 0.93, with_blur
    assert with_blur.mean() > without.mean() + 0.02, (with_blur, without)


@given(
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 3),
    levels=st.integers(2, 9),
    k=st.sampled_from([1, 3, 5]),
    masked=st.booleans(),
    top=st.integers(1, 40),
)
def test_select_keypoints_numpy_path_equals_the_torch_expressions(
    seed: int, batch: int, levels: int, k: int, masked: bool, top: int
) -> None:
    """The CPU candidates (numpy) are the torch expressions' exactly: the same pixels,
    order, scores and dtypes, with ties (few grey levels) and a mask."""
    g = torch.Generator().manual_seed(seed)
    rep = torch.randint(0, levels, (batch, 1, 23, 31), generator=g).float() / (levels - 1)
    rel = torch.rand(batch, 1, 23, 31, generator=g)
    valid = torch.rand(batch, 1, 23, 31, generator=g) > 0.2 if masked else None
    keep = nms(rep, k) & (rep >= 0.4) & (rel >= 0.3)
    if valid is not None:
        keep &= valid
    b, _, y, x = keep.nonzero(as_tuple=True)
    s = rep[b, 0, y, x] * rel[b, 0, y, x]
    cand = select_keypoints(rep, rel, valid, 0.4, 0.3, max_keypoints=top, nms_size=k)
    order = _top_k_per_image(b, s, top)
    assert torch.equal(cand.batch, b[order])
    assert torch.equal(cand.xy, torch.stack([x[order], y[order]], dim=1))
    assert torch.equal(cand.score, s[order])
    assert cand.xy.dtype == torch.int64 and cand.score.dtype == torch.float32
