"""Exposure of the montage's fields: one smooth gain field per field, fitted on the overlaps.

Two photographs of one eye differ in illumination by more than a constant: a halo, a
dark corner, a vignette. Each field ``k`` gets a gain field ``exp(g_k(x, y))`` per
channel, where ``g_k`` is bilinear between the nodes of a :data:`GAIN_GRID` x
:data:`GAIN_GRID` grid spanning the field's canvas rectangle. The reference field keeps
``g = 0``. The nodes are fitted jointly, by ``scipy.optimize.least_squares`` with a
``soft_l1`` loss (lesions, residual misregistration and reflections are outliers), to:

- agreement in every overlap: ``log I_k + g_k = log I_l + g_l`` at sampled pixels of
  low-passed copies, outside the vessels (black top-hat of green) and outside clipped
  or near-black pixels;
- smoothness: differences between neighbouring nodes of each grid (weight
  :data:`SMOOTHNESS`), which also carries the gain from the overlaps across the rest of
  the field as a constant;
- a small pull towards 1 (:data:`RIDGE`) where nothing constrains a node.

Everything runs on the reduced copies the seam finder uses; :func:`gain_map` evaluates
a field's gain at full size.

Coordinates: canvas pixels ``(x, y)``, the centre of the top-left pixel at (0, 0); a
rectangle is ``(x, y, width, height)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.sparse import coo_matrix, csr_matrix, vstack

GAIN_GRID = 8
"""Nodes per side of a field's gain grid."""

SMOOTHNESS = 0.5
"""Weight of the rows that tie neighbouring nodes of a gain grid."""

RIDGE = 0.005
"""Weight of the rows that pull every node towards gain 1."""

SAMPLES_PER_PAIR = 1000
"""At most this many overlap pixels per pair of fields and channel (evenly subsampled)."""

MIN_SAMPLES = 50
"""Fewer usable overlap pixels than this (per channel) add no rows for a pair."""

PAIR_WEIGHT = 1000.0
"""The rows of one pair of fields weigh as much as this many samples of weight 1."""

LOSS_SCALE = 0.05
"""``f_scale`` of the ``soft_l1`` loss (log intensity: about 5 %)."""

MAX_ITERATIONS = 5
"""Robust (``soft_l1``) iterations after the plain least-squares start."""

LOW_PASS = 2.0
"""Gaussian sigma (reduced-copy px) of the copies compared in the overlaps."""


def _basis(
    points: np.ndarray, rect: tuple[int, int, int, int], grid: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights of canvas ``points (N, 2)`` on the nodes of ``rect``'s grid.

    Returns:
        ``(nodes (N, 4) int, weights (N, 4) float)``; node index ``iy * grid + ix``.
    """
    x, y, w, h = rect
    u = np.clip((points[:, 0] - x) / max(w - 1, 1) * (grid - 1), 0, grid - 1)
    v = np.clip((points[:, 1] - y) / max(h - 1, 1) * (grid - 1), 0, grid - 1)
    i0 = np.minimum(np.floor(u).astype(int), grid - 2)
    j0 = np.minimum(np.floor(v).astype(int), grid - 2)
    tu, tv = u - i0, v - j0
    nodes = np.stack(
        [j0 * grid + i0, j0 * grid + i0 + 1, (j0 + 1) * grid + i0, (j0 + 1) * grid + i0 + 1], 1
    )
    weights = np.stack([(1 - tu) * (1 - tv), tu * (1 - tv), (1 - tu) * tv, tu * tv], 1)
    return nodes, weights


def _differences(grid: int) -> csr_matrix:
    """``(R, grid * grid)`` rows ``n[i+1] - n[i]`` between neighbouring nodes along x and
    y: a membrane, which carries a gain beyond the overlaps as a constant, not a trend."""
    index = np.arange(grid * grid).reshape(grid, grid)
    pairs = [(index[:, :-1], index[:, 1:]), (index[:-1, :], index[1:, :])]
    a = np.concatenate([p[0].ravel() for p in pairs])
    b = np.concatenate([p[1].ravel() for p in pairs])
    r = np.arange(len(a))
    return csr_matrix(
        (np.r_[-np.ones(len(a)), np.ones(len(b))], (np.r_[r, r], np.r_[a, b])),
        shape=(len(a), grid * grid),
    )


def _usable(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` bool: where each channel of a reduced field is fit to compare:
    inside the (eroded) mask, not on a vessel (black top-hat of green), and that channel
    neither clipped nor near black (a halo that clips red still shows in green)."""
    inner = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0
    green = np.ascontiguousarray(image[..., 1]).astype(np.uint8)
    hat = cv2.morphologyEx(green, cv2.MORPH_BLACKHAT, np.ones((7, 7), np.uint8))
    sd = 1.4826 * float(np.median(hat[inner])) + 1.0 if inner.any() else 1.0
    return (inner & (hat < 2.5 * sd))[..., None] & (image < 250) & (image > 3)


def fit_gains(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    corners: Sequence[tuple[int, int]],
    scale: float,
    rects: Sequence[tuple[int, int, int, int]],
    reference: int,
    grid: int = GAIN_GRID,
) -> list[np.ndarray]:
    """The log-gain node grids of every field.

    Args:
        images: reduced warped fields ``(h_k, w_k, 3)`` uint8 BGR.
        masks: their ``(h_k, w_k)`` uint8 masks (nonzero = valid).
        corners: their top-left corners in reduced canvas px.
        scale: reduced px per canvas px.
        rects: the fields' full-size canvas rectangles ``(x, y, width, height)``.
        reference: the field whose gain stays 1.
        grid: nodes per side.

    Returns:
        One ``(grid, grid, 3)`` float64 array of log gains per field (zeros for the
        reference and for a field that overlaps no other).
    """
    n = len(images)
    per_field = grid * grid * 3
    lows, usable = [], []
    for img, m in zip(images, masks, strict=True):
        low = cv2.GaussianBlur(img.astype(np.float32), (0, 0), LOW_PASS)
        lows.append(np.log(np.maximum(low, 1.0)))
        usable.append(_usable(img, m))
    blocks, targets = [], []
    for k in range(n):
        for m in range(k + 1, n):
            rows = _overlap_rows(k, m, lows, usable, corners, scale, rects, grid, n)
            if rows is not None:
                blocks.append(rows[0]), targets.append(rows[1])
    gains = [np.zeros((grid, grid, 3)) for _ in range(n)]
    if not blocks:
        return gains
    smooth = _differences(grid)
    eye = csr_matrix(np.eye(grid * grid))
    for k in range(n):
        for c in range(3):
            for reg, weight in ((smooth, SMOOTHNESS), (eye, RIDGE)):
                block = coo_matrix(reg * weight)
                cols = block.col + k * per_field + c * grid * grid
                blocks.append(
                    csr_matrix(
                        (block.data, (block.row, cols)), shape=(block.shape[0], n * per_field)
                    )
                )
                targets.append(np.zeros(block.shape[0]))
    a = vstack(blocks).tocsr()
    b = np.concatenate(targets)
    keep = np.ones(n * per_field, bool)
    keep[reference * per_field : (reference + 1) * per_field] = False
    a = a[:, keep]
    normal = (a.T @ a).toarray()  # the least-squares start: small, dense, positive
    start = np.linalg.solve(normal, a.T @ b)  # definite (every node has a ridge row)
    fit = least_squares(
        lambda t: a @ t - b,
        start,
        jac=lambda t: a,
        loss="soft_l1",
        f_scale=LOSS_SCALE,
        method="trf",
        tr_solver="lsmr",
        max_nfev=MAX_ITERATIONS,
    )
    theta = np.zeros(n * per_field)
    theta[keep] = fit.x
    for k in range(n):
        block = theta[k * per_field : (k + 1) * per_field].reshape(3, grid, grid)
        gains[k] = np.transpose(block, (1, 2, 0))
    return gains


def _overlap_rows(
    k: int,
    m: int,
    lows: Sequence[np.ndarray],
    usable: Sequence[np.ndarray],
    corners: Sequence[tuple[int, int]],
    scale: float,
    rects: Sequence[tuple[int, int, int, int]],
    grid: int,
    n: int,
) -> tuple[csr_matrix, np.ndarray] | None:
    """The agreement rows of fields ``k`` and ``m`` (3 channels), or None if they share
    too few usable pixels."""
    (xk, yk), (xm, ym) = corners[k], corners[m]
    hk, wk = usable[k].shape[:2]
    hm, wm = usable[m].shape[:2]
    x0, y0 = max(xk, xm), max(yk, ym)
    x1, y1 = min(xk + wk, xm + wm), min(yk + hk, ym + hm)
    if x1 <= x0 or y1 <= y0:
        return None
    both = (
        usable[k][y0 - yk : y1 - yk, x0 - xk : x1 - xk]
        & usable[m][y0 - ym : y1 - ym, x0 - xm : x1 - xm]
    )
    per_field = grid * grid * 3
    rows, cols, vals, target = [], [], [], []
    count = 0
    for c in range(3):
        ys, xs = np.nonzero(both[..., c])
        if len(xs) < MIN_SAMPLES:
            continue
        pick = np.linspace(0, len(xs) - 1, min(len(xs), SAMPLES_PER_PAIR)).astype(int)
        ys, xs = ys[pick] + y0, xs[pick] + x0
        diff = lows[m][ys - ym, xs - xm, c] - lows[k][ys - yk, xs - xk, c]
        canvas = np.stack([(xs + 0.5) / scale - 0.5, (ys + 0.5) / scale - 0.5], 1)
        weight = 1.0 / np.sqrt(len(xs) / PAIR_WEIGHT)  # a pair weighs PAIR_WEIGHT samples
        r = np.repeat(np.arange(len(xs)) + count, 4)
        for field, sign in ((k, 1.0), (m, -1.0)):
            nodes, w = _basis(canvas, rects[field], grid)
            rows.append(r)
            cols.append((nodes + field * per_field + c * grid * grid).ravel())
            vals.append(sign * weight * w.ravel())
        target.append(weight * diff)
        count += len(xs)
    if not count:
        return None
    matrix = csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(count, n * per_field),
    )
    return matrix, np.concatenate(target)


def gain_map(log_gains: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    """``(height, width, 3)`` float32 gains of a field over its canvas ``rect``
    (bilinear between the nodes of ``log_gains (G, G, 3)``, then ``exp``)."""
    _, _, w, h = rect
    g = log_gains.shape[0]
    mx = np.tile(np.linspace(0, g - 1, w, dtype=np.float32), (h, 1))
    my = np.tile(np.linspace(0, g - 1, h, dtype=np.float32)[:, None], (1, w))
    nodes = np.exp(log_gains).astype(np.float32)
    return cv2.remap(nodes, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
