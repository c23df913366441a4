"""Joint robust fit of many fields' transforms to one montage frame (image-to-mosaic).

Each placed field ``k`` has a transform ``T_k`` from its pixels to the montage frame (the
reference field's pixels; ``T_ref`` is the identity and held fixed). Every verified edge
``(i, j)`` contributes its inlier correspondences ``p_i <-> p_j``; the residual of one is
``T_i(p_i) - T_j(p_j)`` in montage pixels. All ``T_k`` are fitted together with
``scipy.optimize.least_squares`` and a robust loss (``soft_l1``), so pairs outside the
spanning tree that gave the start agree too (Can et al. 2002, "mosaicing the curved human
retina": image-to-mosaic transforms fitted jointly over all pairs). Edges whose median
residual stays high after the fit are dropped, worst first, and the fit is repeated.

Per-field models: ``"homography"`` (8 parameters; the start) or ``"quadratic"`` (12, the
model of :class:`~fundusfeat.geometry.transforms.QuadraticTransform`, started from the
jointly fitted homographies). Both are fitted in normalised coordinates (per field: the
centroid and RMS radius of its edge points) with analytic Jacobians.

Coordinates: ``(x, y)`` pixels, the centre of the top-left pixel at (0, 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from fundusfeat.geometry.transforms import ProjectiveTransform, QuadraticTransform, Transform

FIELD_MODELS = ("homography", "quadratic")
"""Per-field models of the joint fit."""

DEFAULT_LOSS_SCALE = 1.0
"""Montage pixels at which the soft-L1 loss turns from quadratic to linear."""

DEFAULT_DROP_PX = 5.0
"""Median residual (montage px) above which an edge is inconsistent with the joint fit
(and above 3x the median over all edges)."""


@dataclass(frozen=True)
class Edge:
    """A registration between fields ``i`` and ``j``: what the joint fit takes, and what
    the montage's field graph keeps of a verified pair.

    Attributes:
        i, j: field indices.
        points_i, points_j: ``(N, 2)`` corresponding points (field-i px, field-j px), the
            pair's inliers.
        transform: field i px -> field j px (the pairwise registration), or None.
        confidence: the registration's confidence in [0, 1].
        inliers: the registration's inlier count.
    """

    i: int
    j: int
    points_i: np.ndarray
    points_j: np.ndarray
    transform: Transform | None = None
    confidence: float = 1.0
    inliers: int = 0


def _unpacked(edges: Sequence[Edge]) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    return [(e.i, e.j, e.points_i, e.points_j) for e in edges]


_NPARAMS = {"homography": 8, "quadratic": 12}


@dataclass(frozen=True)
class JointFit:
    """Outcome of :func:`fit_jointly`.

    Attributes:
        transforms: ``{field: Transform}`` field px -> montage px (reference: identity).
        residuals: ``{edge index: median residual (montage px)}`` of every edge after the
            fit, dropped ones included.
        dropped: indices of the edges dropped as inconsistent, in the order dropped.
        cost: final robust cost (``least_squares``' ``cost``).
        model: the per-field model.
    """

    transforms: dict[int, Transform]
    residuals: dict[int, float]
    dropped: tuple[int, ...]
    cost: float
    model: str


@dataclass(frozen=True)
class _Norm:
    """``u = (p - centre) / scale`` (the same scale on both axes)."""

    centre: np.ndarray
    scale: float

    def matrix(self) -> np.ndarray:
        s, (cx, cy) = self.scale, self.centre
        return np.array([[1 / s, 0, -cx / s], [0, 1 / s, -cy / s], [0, 0, 1.0]])


def _norm_of(points: np.ndarray) -> _Norm:
    centre = points.mean(axis=0)
    scale = float(np.sqrt(((points - centre) ** 2).sum(axis=1).mean() / 2.0))
    return _Norm(centre, max(scale, 1e-6))


def _monomials(u: np.ndarray) -> np.ndarray:
    x, y = u[:, 0], u[:, 1]
    return np.stack([x * x, x * y, y * y, x, y, np.ones_like(x)], axis=1)


class _Problem:
    """The stacked residuals and their Jacobian for one model and one set of edges."""

    def __init__(
        self,
        model: str,
        edges: Sequence[Edge],
        norms: Mapping[int, _Norm],
        free: Sequence[int],
        frame: _Norm,
    ) -> None:
        edges = _unpacked(edges)
        self.model, self.edges, self.norms, self.frame = model, edges, norms, frame
        self.column = {k: n * _NPARAMS[model] for n, k in enumerate(free)}
        self.fixed: dict[int, np.ndarray] = {}  # reference: montage pixels as is
        self.normalised = [
            ((pi - norms[i].centre) / norms[i].scale, (pj - norms[j].centre) / norms[j].scale)
            for i, j, pi, pj in edges
        ]
        self.rows = int(sum(2 * len(pi) for _, _, pi, _ in edges))

    def _map(self, k: int, u: np.ndarray, p: np.ndarray, theta: np.ndarray):
        """Montage px of field-k points (normalised ``u``, pixels ``p``) and ``d/dtheta``
        (``(N, 2, P)``), or None for a fixed field."""
        if k not in self.column:
            return p, None
        c, n = self.column[k], _NPARAMS[self.model]
        t = theta[c : c + n]
        s = self.frame.scale
        if self.model == "homography":
            g = np.append(t, 1.0).reshape(3, 3)
            q = np.c_[u, np.ones(len(u))] @ g.T
            x = q[:, :2] / q[:, 2:3]
            jac = np.zeros((len(u), 2, 8))
            w = s / q[:, 2]
            jac[:, 0, 0], jac[:, 0, 1], jac[:, 0, 2] = u[:, 0] * w, u[:, 1] * w, w
            jac[:, 1, 3], jac[:, 1, 4], jac[:, 1, 5] = u[:, 0] * w, u[:, 1] * w, w
            for r in (0, 1):
                jac[:, r, 6] = -x[:, r] * u[:, 0] * w
                jac[:, r, 7] = -x[:, r] * u[:, 1] * w
        else:
            m = _monomials(u)
            x = m @ t.reshape(2, 6).T
            jac = np.zeros((len(u), 2, 12))
            jac[:, 0, :6] = m * s
            jac[:, 1, 6:] = m * s
        return self.frame.centre + s * x, jac

    def residuals(self, theta: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                (self._map(i, ui, pi, theta)[0] - self._map(j, uj, pj, theta)[0]).ravel()
                for (i, j, pi, pj), (ui, uj) in zip(self.edges, self.normalised, strict=True)
            ]
        )

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        out = np.zeros((self.rows, len(theta)))
        row, n = 0, _NPARAMS[self.model]
        for (i, j, pi, pj), (ui, uj) in zip(self.edges, self.normalised, strict=True):
            for k, u, p, sign in ((i, ui, pi, 1.0), (j, uj, pj, -1.0)):
                jac = self._map(k, u, p, theta)[1]
                if jac is not None:
                    c = self.column[k]
                    out[row : row + 2 * len(u), c : c + n] += sign * jac.reshape(-1, n)
            row += 2 * len(pi)
        return out

    def start(self, transforms: Mapping[int, Transform]) -> np.ndarray:
        """Parameters of the current transforms (quadratic: least squares of a grid)."""
        theta = np.zeros(len(self.column) * _NPARAMS[self.model])
        frame = self.frame.matrix()
        for k, c in self.column.items():
            h_k = transforms[k].homography()
            norm = self.norms[k]
            if self.model == "homography":
                g = frame @ h_k @ np.linalg.inv(norm.matrix())
                theta[c : c + 8] = (g / g[2, 2]).ravel()[:8]
            else:
                ys, xs = np.mgrid[-1.5:1.5:9j, -1.5:1.5:9j]
                u = np.stack([xs.ravel(), ys.ravel()], axis=1)
                p = norm.centre + norm.scale * u
                target = (transforms[k].apply(p) - self.frame.centre) / self.frame.scale
                coef, *_ = np.linalg.lstsq(_monomials(u), target, rcond=None)
                theta[c : c + 12] = coef.T.ravel()
        return theta

    def transforms(self, theta: np.ndarray) -> dict[int, Transform]:
        out: dict[int, Transform] = {}
        n = _NPARAMS[self.model]
        for k, c in self.column.items():
            t = theta[c : c + n]
            norm = self.norms[k]
            if self.model == "homography":
                g = np.append(t, 1.0).reshape(3, 3)
                h = np.linalg.inv(self.frame.matrix()) @ g @ norm.matrix()
                out[k] = ProjectiveTransform(h / h[2, 2])
            else:
                pts = np.concatenate(
                    [p for i, j, pi, pj in self.edges for f, p in ((i, pi), (j, pj)) if f == k]
                )
                out[k] = QuadraticTransform(
                    coefficients=t.reshape(2, 6),
                    centre1=tuple(norm.centre),
                    scale1=(norm.scale, norm.scale),
                    centre2=tuple(self.frame.centre),
                    scale2=(self.frame.scale, self.frame.scale),
                    region=(*pts.min(axis=0), *pts.max(axis=0)),
                )
        return out


def _median_residuals(transforms: Mapping[int, Transform], edges: Sequence[Edge]) -> list[float]:
    return [
        float(np.median(np.linalg.norm(transforms[i].apply(pi) - transforms[j].apply(pj), axis=1)))
        for i, j, pi, pj in _unpacked(edges)
    ]


def _solve(
    model: str,
    transforms: dict[int, Transform],
    edges: Sequence[Edge],
    reference: int,
    loss_scale: float,
) -> float:
    """One robust fit of every field of ``edges`` (``transforms`` updated in place)."""
    points: dict[int, list[np.ndarray]] = {}
    for i, j, pi, pj in _unpacked(edges):
        points.setdefault(i, []).append(pi)
        points.setdefault(j, []).append(pj)
    free = sorted(set(points) - {reference})
    if not free:
        return 0.0
    norms = {k: _norm_of(np.concatenate(p)) for k, p in points.items()}
    frame = norms.get(reference, norms[free[0]])
    problem = _Problem(model, edges, norms, free, frame)
    sol = least_squares(
        problem.residuals,
        problem.start(transforms),
        jac=problem.jacobian,
        loss="soft_l1",
        f_scale=loss_scale,
        x_scale="jac",
        method="trf",
        max_nfev=100,
    )
    transforms.update(problem.transforms(sol.x))
    return float(sol.cost)


def fit_jointly(
    initial: Mapping[int, np.ndarray],
    edges: Sequence[Edge],
    reference: int,
    *,
    model: str = "homography",
    loss_scale: float = DEFAULT_LOSS_SCALE,
    drop_px: float = DEFAULT_DROP_PX,
    max_drops: int | None = None,
) -> JointFit:
    """Fit all fields' transforms jointly over the inliers of every edge.

    Args:
        initial: ``{field: (3, 3) homography}`` start (field px -> montage px, e.g.
            composed along a spanning tree); must hold ``reference`` and every field of
            ``edges``.
        edges: the verified :class:`Edge` s.
        reference: the field whose transform stays the identity.
        model: per-field model, one of :data:`FIELD_MODELS` (the quadratic starts from
            the joint homography fit).
        loss_scale: soft-L1 scale in montage pixels.
        drop_px: an edge whose median residual exceeds this and 3x the median over all
            edges is dropped (the worst first) and the fit repeated.
        max_drops: most edges dropped (default: all but a spanning set are allowed).

    Returns:
        :class:`JointFit`. A field left without any edge keeps its start.

    Raises:
        ValueError: an unknown model, ``reference`` missing from ``initial``, or an edge
            naming a field without a start.
    """
    if model not in FIELD_MODELS:
        raise ValueError(f"model must be one of {FIELD_MODELS}, got {model!r}")
    if reference not in initial:
        raise ValueError(f"reference {reference} has no initial homography")
    for i, j, _, _ in _unpacked(edges):
        if i not in initial or j not in initial:
            raise ValueError(f"edge ({i}, {j}) names a field without an initial homography")
    transforms: dict[int, Transform] = {
        k: ProjectiveTransform(np.asarray(h, np.float64)) for k, h in initial.items()
    }
    transforms[reference] = ProjectiveTransform(np.eye(3))
    active = list(range(len(edges)))
    dropped: list[int] = []
    limit = len(edges) if max_drops is None else max_drops
    while True:
        used = [edges[e] for e in active]
        cost = _solve("homography", transforms, used, reference, loss_scale)
        if model == "quadratic":
            cost = _solve("quadratic", transforms, used, reference, loss_scale)
        med = dict(zip(active, _median_residuals(transforms, used), strict=True))
        overall = float(np.median(list(med.values()))) if med else 0.0
        bad = [e for e, m in med.items() if m > max(drop_px, 3.0 * overall)]
        if not bad or len(dropped) >= limit:
            break
        worst = max(bad, key=lambda e: med[e])
        active.remove(worst)
        dropped.append(worst)  # refit from the current (robust) fit
    residuals = dict(enumerate(_median_residuals(transforms, list(edges))))
    return JointFit(transforms, residuals, tuple(dropped), cost, model)
