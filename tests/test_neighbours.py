"""nearest_within: the k nearest points within a radius, as scipy's cKDTree answers it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from fundusfeat.geometry.neighbours import nearest_within


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 300),
    m=st.integers(0, 200),
    k=st.integers(1, 7),
    radius=st.floats(0.5, 80.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_same_answer_as_ckdtree(n, m, k, radius, seed):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(-50, 400, (n, 2))
    qry = np.concatenate(
        [rng.uniform(-200, 600, (m, 2)), ref[: m // 3] + rng.normal(0, 2, (min(n, m // 3), 2))]
    )
    dist, idx = nearest_within(ref, qry, k, radius)
    assert dist.shape == idx.shape == (len(qry), k)
    if n == 0:
        assert np.all(idx == 0) and np.all(np.isinf(dist))
        return
    want_d, want_i = cKDTree(ref).query(qry, k=k, distance_upper_bound=radius)
    want_d, want_i = want_d.reshape(len(qry), k), want_i.reshape(len(qry), k)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(dist, want_d, rtol=1e-12)


def test_far_and_huge_queries_have_no_neighbours():
    ref = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 1.0]])
    qry = np.array([[1e18, -1e18], [10.5, 0.5], [-30.0, 0.0]])
    dist, idx = nearest_within(ref, qry, 2, 3.0)
    np.testing.assert_array_equal(idx, [[3, 3], [1, 2], [3, 3]])
    assert np.isinf(dist[0]).all() and np.isinf(dist[2]).all()


@pytest.mark.parametrize(
    ("k", "radius", "name"), [(0, 1.0, "k"), (1, 0.0, "radius"), (1, np.inf, "radius")]
)
def test_bad_arguments_are_named(k, radius, name):
    with pytest.raises(ValueError, match=name):
        nearest_within(np.zeros((2, 2)), np.zeros((1, 2)), k, radius)


def test_a_small_radius_over_a_wide_extent_keeps_the_grid_small():
    """Points over 20 000 px with a 0.5 px radius: the grid is capped at 1024 cells a side
    (uncapped, its table of cell starts would need 40 000^2 entries, 12.8 GB) and the
    answer stays exact."""
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 20_000, (2000, 2))
    qry = ref[:500] + rng.normal(0, 0.3, (500, 2))
    dist, idx = nearest_within(ref, qry, 3, 0.5)
    want_d, want_i = cKDTree(ref).query(qry, k=3, distance_upper_bound=0.5)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(dist, want_d, rtol=1e-12)


def test_equal_distances_come_by_cell_then_reference_order():
    """Four points at distance 1 from the query. The grid starts at their minimum (4, 4)
    with cells of the radius' side (1.5): points 1 and 3 share cell (0, 0), point 2 is in
    (0, 1), point 0 in (1, 0); ties come by cell (x, then y), then reference order."""
    ref = np.array([[6.0, 5.0], [4.0, 5.0], [5.0, 6.0], [5.0, 4.0]])
    dist, idx = nearest_within(ref, np.array([[5.0, 5.0]]), 4, 1.5)
    np.testing.assert_array_equal(dist, [[1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(idx, [[1, 3, 2, 0]])
