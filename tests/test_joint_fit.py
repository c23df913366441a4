"""geometry.joint_fit: known-answer fits of many fields, outlier edges dropped, bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fundusfeat.geometry.homography import transform_points
from fundusfeat.geometry.joint_fit import Edge, fit_jointly
from fundusfeat.geometry.transforms import QuadraticTransform


def _homography(rng: np.random.Generator, dx: float, dy: float) -> np.ndarray:
    a = np.deg2rad(rng.uniform(-3, 3))
    s = rng.uniform(0.97, 1.03)
    h = np.array(
        [[s * np.cos(a), -s * np.sin(a), dx], [s * np.sin(a), s * np.cos(a), dy], [0, 0, 1]]
    )
    h[2, :2] = rng.uniform(-2e-5, 2e-5, 2)
    return h


def _scene(rng: np.random.Generator, noise: float = 0.3):
    """Five fields (a cross) with true homographies field px -> reference px, and
    correspondences of every overlapping pair (with pixel noise)."""
    offsets = [(0, 0), (250, 0), (-250, 0), (0, 250), (0, -250)]
    truth = {0: np.eye(3)} | {k: _homography(rng, *offsets[k]) for k in range(1, 5)}
    edges = []
    for i in range(5):
        for j in range(i + 1, 5):
            pi = rng.uniform(0, 500, (400, 2))
            ref = transform_points(truth[i], pi)
            pj = transform_points(np.linalg.inv(truth[j]), ref)
            inside = (pj >= 0).all(axis=1) & (pj < 500).all(axis=1)
            if inside.sum() >= 30:
                pi_n = pi[inside] + rng.normal(0, noise, (inside.sum(), 2))
                pj_n = pj[inside] + rng.normal(0, noise, (inside.sum(), 2))
                edges.append(Edge(i, j, pi_n, pj_n))
    return truth, edges


def _start(truth: dict, rng: np.random.Generator) -> dict:
    """Perturbed starts (a few pixels of translation and 1 % scale)."""
    out = {}
    for k, h in truth.items():
        p = np.eye(3)
        p[:2, 2] = rng.uniform(-4, 4, 2)
        p[0, 0] = p[1, 1] = 1 + rng.uniform(-0.01, 0.01)
        out[k] = p @ h
    return out


def _max_error(transforms: dict, truth: dict) -> float:
    grid = np.stack(np.meshgrid(np.linspace(0, 500, 6), np.linspace(0, 500, 6)), -1).reshape(-1, 2)
    return max(
        float(np.abs(transforms[k].apply(grid) - transform_points(h, grid)).max())
        for k, h in truth.items()
    )


def test_homographies_recovered_exactly_without_noise():
    rng = np.random.default_rng(0)
    truth, edges = _scene(rng, noise=0.0)
    fit = fit_jointly(_start(truth, rng), edges, 0)
    assert _max_error(fit.transforms, truth) < 1e-6
    assert max(fit.residuals.values()) < 1e-6


def test_homographies_recovered_from_all_pairs():
    rng = np.random.default_rng(0)
    truth, edges = _scene(rng)
    fit = fit_jointly(_start(truth, rng), edges, 0)
    assert fit.dropped == ()
    assert _max_error(fit.transforms, truth) < 1.0  # 0.3 px noise; corners extrapolated
    assert np.allclose(fit.transforms[0].homography(), np.eye(3))
    assert set(fit.residuals) == set(range(len(edges)))
    assert max(fit.residuals.values()) < 1.0


def test_inconsistent_edge_dropped():
    rng = np.random.default_rng(1)
    truth, edges = _scene(rng)
    e = edges[-1]
    edges[-1] = replace(e, points_j=e.points_j + np.array([40.0, -25.0]))  # a wrong registration
    fit = fit_jointly(_start(truth, rng), edges, 0)
    assert fit.dropped == (len(edges) - 1,)
    assert fit.residuals[len(edges) - 1] > 20
    assert _max_error(fit.transforms, truth) < 1.0


def test_quadratic_fits_a_curved_map():
    rng = np.random.default_rng(2)
    truth, edges = _scene(rng, noise=0.0)
    bend = np.array([[3e-4, 0.0, 0.0], [0.0, 2e-4, 0.0]])  # a curvature a homography lacks
    curved = []
    for e in edges:
        pj = e.points_j
        curved.append(replace(e, points_j=pj + (bend @ np.c_[pj**2 / 500.0, np.ones(len(pj))].T).T))
    h_fit = fit_jointly(truth, curved, 0, model="homography")
    q_fit = fit_jointly(truth, curved, 0, model="quadratic")
    assert isinstance(q_fit.transforms[1], QuadraticTransform)
    assert max(q_fit.residuals.values()) < max(h_fit.residuals.values())


def test_bad_input():
    rng = np.random.default_rng(3)
    truth, edges = _scene(rng)
    with pytest.raises(ValueError, match="model"):
        fit_jointly(truth, edges, 0, model="cubic")
    with pytest.raises(ValueError, match="reference"):
        fit_jointly({1: np.eye(3)}, [], 0)
    with pytest.raises(ValueError, match="edge"):
        fit_jointly({0: np.eye(3)}, edges[:1], 0)


def test_no_edges_keeps_the_reference():
    fit = fit_jointly({0: np.eye(3)}, [], 0)
    assert list(fit.transforms) == [0] and fit.residuals == {} and fit.dropped == ()
