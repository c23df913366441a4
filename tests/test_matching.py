"""Tests for fundusfeat.geometry.matching.FundusMatcher against cv2.BFMatcher."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundusfeat import FundusMatcher


def _unit(rng: np.random.Generator, n: int, d: int = 32) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _as_tuples(matches):
    return [(m.queryIdx, m.trainIdx) for m in matches]


def _assert_same_as_cv(ours, ref, d1, d2):
    """Equal matches; where they differ, the two choices must tie within float tolerance."""
    assert len(ours) == len(ref) or abs(len(ours) - len(ref)) <= 1
    theirs = {m.queryIdx: m for m in ref}
    for m in ours:
        r = theirs.get(m.queryIdx)
        if r is None or r.trainIdx == m.trainIdx:
            if r is not None:
                assert m.distance == pytest.approx(r.distance, abs=1e-5)
            continue
        alt = np.linalg.norm(d1[m.queryIdx] - d2[r.trainIdx])
        assert m.distance == pytest.approx(alt, abs=1e-5)


class TestMatch:
    def test_smoke_and_types(self):
        rng = np.random.default_rng(0)
        d1, d2 = _unit(rng, 50), _unit(rng, 60)
        matches = FundusMatcher.create(device="cpu").match(d1, d2)
        assert isinstance(matches, list) and all(isinstance(m, cv2.DMatch) for m in matches)
        assert [m.queryIdx for m in matches] == sorted(m.queryIdx for m in matches)

    @given(seed=st.integers(0, 10_000), n1=st.integers(1, 80), n2=st.integers(1, 80))
    def test_identical_to_bfmatcher_crosscheck(self, seed, n1, n2):
        rng = np.random.default_rng(seed)
        d1, d2 = _unit(rng, n1), _unit(rng, n2)
        ours = FundusMatcher.create(device="cpu").match(d1, d2)
        ref = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(d1, d2)
        _assert_same_as_cv(ours, ref, d1, d2)

    def test_exact_ties_pick_lowest_index(self):
        d1 = np.eye(4, dtype=np.float32)[:2]
        d2 = np.stack([np.eye(4)[0], np.eye(4)[0], np.eye(4)[1]]).astype(np.float32)
        ours = FundusMatcher.create(crossCheck=False, device="cpu").match(d1, d2)
        ref = cv2.BFMatcher(cv2.NORM_L2).match(d1, d2)
        assert _as_tuples(ours) == _as_tuples(ref) == [(0, 0), (1, 2)]

    def test_exact_ties_in_mutual_matching_pick_lowest_index(self):
        e = np.eye(4, dtype=np.float32)
        d1 = np.stack([e[1], e[0], e[0]])
        d2 = np.stack([e[0], e[0], e[2], e[1]])
        ours = FundusMatcher.create(device="cpu").match(d1, d2)
        ref = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True).match(d1, d2)
        assert _as_tuples(ours) == _as_tuples(ref) == [(0, 3), (1, 0)]

    def test_without_crosscheck_equals_bfmatcher(self):
        rng = np.random.default_rng(3)
        d1, d2 = _unit(rng, 100), _unit(rng, 70)
        ours = FundusMatcher.create(crossCheck=False, device="cpu").match(d1, d2)
        ref = cv2.BFMatcher(cv2.NORM_L2).match(d1, d2)
        assert _as_tuples(ours) == _as_tuples(ref)
        np.testing.assert_allclose([m.distance for m in ours], [m.distance for m in ref], atol=1e-5)

    @given(seed=st.integers(0, 10_000))
    def test_crosscheck_symmetry(self, seed):
        rng = np.random.default_rng(seed)
        d1, d2 = _unit(rng, 40), _unit(rng, 30)
        m = FundusMatcher.create(device="cpu")
        forward = {(a.queryIdx, a.trainIdx) for a in m.match(d1, d2)}
        backward = {(b.trainIdx, b.queryIdx) for b in m.match(d2, d1)}
        assert forward == backward

    def test_ratio(self):
        rng = np.random.default_rng(1)
        d1, d2 = _unit(rng, 60), _unit(rng, 60)
        plain = FundusMatcher.create(device="cpu").match(d1, d2)
        strict = FundusMatcher.create(ratio=0.8, device="cpu").match(d1, d2)
        assert set(_as_tuples(strict)) <= set(_as_tuples(plain))
        knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d1, d2, k=2)
        for m in strict:
            a, b = knn[m.queryIdx]
            assert a.distance < 0.8 * b.distance

    def test_empty(self):
        m = FundusMatcher.create(device="cpu")
        e = np.empty((0, 128), np.float32)
        assert m.match(e, np.ones((3, 128), np.float32)) == []
        assert m.match(np.ones((3, 128), np.float32), e) == []
        assert m.knnMatch(e, e, 2) == []

    @pytest.mark.parametrize(
        "kwargs", [{}, {"crossCheck": False}, {"ratio": 0.9}, {"crossCheck": False, "ratio": 0.8}]
    )
    def test_match_indices_are_match_without_dmatch(self, kwargs):
        rng = np.random.default_rng(5)
        d1, d2 = _unit(rng, 90), _unit(rng, 70)
        m = FundusMatcher.create(device="cpu", **kwargs)
        query, train = m.match_indices(d1, d2)
        assert query.dtype == train.dtype == np.int64
        assert list(zip(query.tolist(), train.tolist(), strict=True)) == _as_tuples(m.match(d1, d2))
        e = np.empty((0, 32), np.float32)
        assert [len(a) for a in m.match_indices(e, d2)] == [0, 0]
        with pytest.raises(TypeError, match="descriptors1"):
            m.match_indices(None, d2)

    def test_pickle(self):
        m = pickle.loads(pickle.dumps(FundusMatcher.create(ratio=0.9, device="cpu")))
        assert m.ratio == 0.9 and m.crossCheck


class TestKnn:
    def test_identical_to_bfmatcher(self):
        rng = np.random.default_rng(2)
        d1, d2 = _unit(rng, 30), _unit(rng, 5)
        ours = FundusMatcher.create(device="cpu").knnMatch(d1, d2, k=7)
        ref = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d1, d2, k=7)
        assert [_as_tuples(r) for r in ours] == [_as_tuples(r) for r in ref]
        assert all(len(r) == 5 for r in ours)

    @pytest.mark.parametrize("k", [2, 3, 8, 9])
    def test_top_k_is_a_stable_sort_with_ties(self, k):
        import torch

        from fundusfeat.geometry.matching import _stable_topk

        rng = np.random.default_rng(k)
        sq = rng.integers(0, 6, size=(300, 40)).astype(np.float32)  # many exact ties
        want_val, want_ind = torch.sort(torch.from_numpy(sq), dim=1, stable=True)
        val, ind = _stable_topk(torch.from_numpy(sq.copy()), k)
        assert torch.equal(ind, want_ind[:, :k]) and torch.equal(val, want_val[:, :k])

    def test_ratio_test_rows_equal_bfmatcher_on_many_descriptors(self):
        rng = np.random.default_rng(5)
        d1, d2 = _unit(rng, 700), _unit(rng, 600)
        d2[10] = d2[3]  # an exact tie
        ours = FundusMatcher.create(device="cpu").knnMatch(d1, d2, k=2)
        ref = cv2.BFMatcher(cv2.NORM_L2).knnMatch(d1, d2, k=2)
        assert [[m.trainIdx for m in r] for r in ours] == [[m.trainIdx for m in r] for r in ref]

    def test_k_exception(self):
        with pytest.raises(ValueError, match="k"):
            FundusMatcher.create(device="cpu").knnMatch(
                np.ones((2, 4), np.float32), np.ones((2, 4), np.float32), 0
            )


class TestBadInputs:
    @pytest.mark.parametrize(
        ("d1", "d2", "exc", "name"),
        [
            (None, np.ones((2, 4), np.float32), TypeError, "descriptors1"),
            (np.ones((2, 4), np.float32), [[1.0] * 4], TypeError, "descriptors2"),
            (np.ones((2, 4), np.uint8), np.ones((2, 4), np.float32), TypeError, "descriptors1"),
            (
                np.ones((2, 4, 1), np.float32),
                np.ones((2, 4), np.float32),
                ValueError,
                "descriptors1",
            ),
            (np.ones((2, 4), np.float32), np.ones((2, 5), np.float32), ValueError, "descriptors2"),
            (
                np.full((2, 4), np.nan, np.float32),
                np.ones((2, 4), np.float32),
                ValueError,
                "descriptors1",
            ),
        ],
    )
    def test_exception_names_argument(self, d1, d2, exc, name):
        with pytest.raises(exc, match=name):
            FundusMatcher.create(device="cpu").match(d1, d2)

    def test_bad_ratio(self):
        with pytest.raises(ValueError, match="ratio"):
            FundusMatcher.create(ratio=1.5)
