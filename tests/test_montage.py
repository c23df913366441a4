"""pipeline.montage: a synthetic 5-field set of the embedded photograph placed with
sub-pixel consistency, a duplicate flagged, another eye left out, JSON round trip, bad
input; canvas helpers."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import fundusfeat
from fundusfeat.evaluation.fields import impostor_field, make_field_set
from fundusfeat.evaluation.montage_bench import transfer_errors
from fundusfeat.geometry.transforms import ProjectiveTransform, QuadraticTransform
from fundusfeat.io.arrays import resize_long_side
from fundusfeat.pipeline.canvas import blend, canvas_bounds, shifted, warp_into
from fundusfeat.pipeline.montage import MontageResult, montage

SIZE = 512
"""Fields of the tests: the embedded photograph at this long side (fast)."""


@pytest.fixture(scope="module")
def fields(retina):
    return make_field_set(resize_long_side(retina, SIZE)[0], "cross5", 0)


@pytest.fixture(scope="module")
def result(fields, detector):
    return montage(fields.images, detector=detector)


def test_every_field_placed_consistently(fields, result):
    assert result.placed == [True] * 5 and result.reasons == ["ok"] * 5
    assert result.image.dtype == np.uint8 and result.image.shape == (*result.size[::-1], 3)
    assert result.mask.shape == result.image.shape[:2] and result.mask.mean() > 0.3
    errors = transfer_errors(result.transforms, fields)
    assert len(errors) == len(fields.pairs) >= 8  # pairs not registered directly included
    assert max(errors.values()) < 2.0  # field px, fields of 512 px
    assert all(e.used for e in result.edges)
    assert sum(e.in_tree for e in result.edges) == 4  # a spanning tree of 5 fields
    assert all(np.isfinite(e.residual) and e.residual < 2.0 for e in result.edges)


def test_reference_undistorted(fields, result):
    t = result.transforms[result.reference]
    pts = np.array([[0.0, 0.0], [100.0, 300.0], [511.0, 400.0]])
    shift = t.apply(pts) - pts
    assert np.allclose(shift, shift[0], atol=1e-6)  # a translation


def test_no_black_rims_in_overlaps(fields, result):
    """Inside the union of the fields the montage is never near black (FOV rims masked)."""
    inner = cv2.erode(result.mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert np.percentile(result.image[inner].max(axis=1), 0.5) > 20


def test_json_round_trip(result, tmp_path):
    path = tmp_path / "m.json"
    result.to_json(path)
    back = MontageResult.from_json(path)
    assert json.loads(path.read_text())["reference"] == result.reference
    assert back.reference == result.reference and back.size == result.size
    assert back.edges == result.edges
    pts = np.array([[10.0, 20.0], [300.0, 200.0]])
    for a, b in zip(result.transforms, back.transforms, strict=True):
        assert np.allclose(a.apply(pts), b.apply(pts))


def test_duplicate_flagged_and_other_eye_left_out(fields, retina, detector):
    other = impostor_field(resize_long_side(cv2.flip(retina, 1), SIZE)[0])
    images = [fields.images[0], fields.images[1], fields.images[0].copy(), other]
    m = montage(images, detector=detector, blend_fields=False)
    assert m.placed == [True, True, True, False]
    assert m.reasons[2] == "duplicate of field 0"
    assert m.transforms[2] is m.transforms[0]
    assert "no verified edge" in m.reasons[3]
    assert not m.success and m.image.size == 0


def test_public_api():
    assert fundusfeat.montage is montage and fundusfeat.MontageResult is MontageResult


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        ([np.zeros((64, 64, 3), np.uint8)], ValueError, "at least 2"),
        ([], ValueError, "at least 2"),
        (np.zeros((2, 64, 64, 3), np.uint8), TypeError, "sequence"),
        ([np.zeros((64, 64, 3), np.uint8), "nowhere.png"], FileNotFoundError, "nowhere"),
        ([np.zeros((64, 64, 3), np.uint8), np.zeros((0, 3))], ValueError, r"images\[1\]"),
    ],
)
def test_bad_images(images, error, match):
    with pytest.raises(error, match=match):
        montage(images, detector=object())


def test_bad_options(fields):
    two = fields.images[:2]
    with pytest.raises(ValueError, match="transform_model"):
        montage(two, transform_model="cubic")
    with pytest.raises(ValueError, match="reference"):
        montage(two, reference=5)
    with pytest.raises(TypeError, match="detector"):
        montage(two, detector=object())


def test_canvas_bound(fields, result, detector):
    with pytest.raises(ValueError, match="max_pixels"):
        montage(fields.images[:2], detector=detector, max_pixels=1000)


# ------------------------------------------------------------------------ canvas helpers
def test_canvas_bounds_and_shift():
    mask = np.ones((10, 20), bool)
    t = ProjectiveTransform(np.array([[1.0, 0, -5], [0, 1, 3], [0, 0, 1]]))
    offset, size = canvas_bounds([ProjectiveTransform(np.eye(3)), t], [mask, mask])
    assert offset == (5.0, 0.0) and size == (25, 13)
    moved = shifted(t, offset)
    assert np.allclose(moved.apply([[0.0, 0.0]]), [[0.0, 3.0]])
    with pytest.raises(ValueError, match="max_pixels"):
        canvas_bounds([t], [mask], max_pixels=100)


def test_shift_of_a_quadratic():
    q = QuadraticTransform(
        np.array([[0.01, 0, 0, 1, 0, 0], [0, 0, 0.02, 0, 1, 0]]),
        (5.0, 5.0),
        (3.0, 3.0),
        (1.0, 2.0),
        (3.0, 3.0),
        (0.0, 0.0, 10.0, 10.0),
    )
    pts = np.array([[1.0, 2.0], [7.0, 9.0]])
    assert np.allclose(shifted(q, (4.0, -1.0)).apply(pts), q.apply(pts) + [4.0, -1.0])


@pytest.mark.parametrize("quadratic", [False, True])
def test_warp_into_identity(retina, quadratic):
    img = retina[:64, :80]
    mask = np.ones(img.shape[:2], bool)
    t = ProjectiveTransform(np.eye(3))
    if quadratic:
        coef = np.array([[0, 0, 0, 1.0, 0, 0], [0, 0, 0, 0, 1.0, 0]])
        t = QuadraticTransform(coef, (0.0, 0.0), (1.0, 1.0), (0.0, 0.0), (1.0, 1.0), (0, 0, 80, 64))
    warped, wmask = warp_into(img, mask, t, (10, 5, 40, 30))
    assert warped.shape == (30, 40, 3) and wmask.all()
    assert np.abs(warped.astype(int) - img[5:35, 10:50]).max() <= 1


def test_blend_two_halves_has_no_gap(retina):
    h, w = retina.shape[:2]
    left, right = retina.copy(), retina.copy()
    m_left = np.zeros((h, w), bool)
    m_left[:, : w * 2 // 3] = True
    m_right = np.zeros((h, w), bool)
    m_right[:, w // 3 :] = True
    left[~m_left] = 0
    right[~m_right] = 0
    ident = ProjectiveTransform(np.eye(3))
    out, mask = blend([left, right], [m_left, m_right], [ident, ident], (w, h))
    assert mask[h // 2, 10 : w - 10].all()
    diff = np.abs(out.astype(int) - retina.astype(int))[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3]
    assert np.median(diff) <= 3


@pytest.mark.slow
def test_full_size_cross_fields_agree_through_the_montage():
    """The 5-field cross of the full-size embedded photograph: every pair of fields
    (registered directly or not) agrees through the montage to < 3 px median."""
    from fundusfeat.io.demo import load_demo_pair

    img, _, _ = load_demo_pair()
    fields = make_field_set(img, "cross5", seed=1)
    res = montage(fields.images)
    assert all(t is not None for t in res.transforms), res.reasons
    for (i, j), (pi, pj) in fields.pairs.items():
        mapped = res.transforms[j].inverse(res.transforms[i].apply(pi))
        err = float(np.median(np.linalg.norm(mapped - pj, axis=1)))
        assert err < 3.0, (i, j, err)


def test_candidate_pairs_prefilter_counts_mutual_matches_with_any_matcher():
    """Beyond ALL_PAIRS_UP_TO fields each field keeps the partners with the most mutual
    matches; FundusMatcher (index arrays) and cv2.BFMatcher (DMatch lists) agree."""
    from types import SimpleNamespace

    from fundusfeat.pipeline.field_graph import ALL_PAIRS_UP_TO, PREFILTER_PARTNERS
    from fundusfeat.pipeline.field_graph import candidate_pairs as pairs_of
    from fundusfeat.pipeline.register import matched_indices

    rng = np.random.default_rng(0)
    n = ALL_PAIRS_UP_TO + 2
    base = rng.normal(size=(n, 60, 32)).astype(np.float32)
    desc = base.copy()
    for i in range(n):  # field i shares 40 descriptors with field i + 1
        j = (i + 1) % n
        desc[j, :40] = base[i, 20:60] + 0.01 * rng.normal(size=(40, 32)).astype(np.float32)
    features = [SimpleNamespace(desc=d / np.linalg.norm(d, axis=1, keepdims=True)) for d in desc]
    ours = fundusfeat.FundusMatcher.create(device="cpu")
    bf = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True)
    q1, t1 = matched_indices(ours, features[0].desc, features[1].desc)
    q2, t2 = matched_indices(bf, features[0].desc, features[1].desc)
    assert q1.dtype == q2.dtype == np.int64
    assert list(zip(q1, t1, strict=True)) == list(zip(q2, t2, strict=True))
    kept = pairs_of(features, ours)
    assert kept == pairs_of(features, bf)
    assert all((i, i + 1) in kept for i in range(n - 1)) and (0, n - 1) in kept
    assert len(kept) <= n * PREFILTER_PARTNERS < n * (n - 1) // 2
