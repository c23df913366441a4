"""Pure tensor functions from network outputs to keypoints and descriptors.

All functions are batched and device-agnostic (they follow their input tensors) and have
no per-keypoint Python loops. Coordinates are ``(x, y)`` pixels with the origin at the
centre of the top-left pixel.

Keypoints are the strict local maxima of the repeatability (NMS window ``nms_size``,
3 x 3 by default) with ``repeatability >= rep_thr`` and ``reliability >= rel_thr``, as in
R2D2; they are ranked by ``score = repeatability * reliability`` and refined to sub-pixel
positions on the repeatability. Where a keypoint lies is thus decided by the
full-resolution repeatability alone (smoothed first by ``rep_blur``, :func:`smooth_map`:
a network's map changes with the sub-pixel phase of a resampled image, and a smoothed
map's maxima move less); the reliability, which the fast networks predict at
1/8 resolution and upsample, only selects and ranks (its maxima would sit on its grid).

Descriptor sampling (shared with the trainer, keep it identical): descriptors at stride
``s`` are sampled at feature coordinate ``u = x / s`` with bilinear ``grid_sample`` and
``align_corners=False``, i.e. normalised coordinate ``(2 u + 1) / w - 1`` for a map of
width ``w`` (same for y with the height), then L2-normalised.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from fundusfeat.features.settings import DetectorConfig

_D = DetectorConfig  # the defaults of every setting live in fundusfeat.features.settings
DEFAULT_MIN_SIZE = 32
"""Pyramid levels whose shorter side would be below this many pixels are skipped."""


class Candidates(NamedTuple):
    """Selected keypoints of a batch, flattened over images.

    Attributes:
        batch: ``(N,)`` int64 image index of each keypoint.
        xy: ``(N, 2)`` int64 pixel ``(x, y)``.
        score: ``(N,)`` float32 ``repeatability * reliability``.
    """

    batch: torch.Tensor
    xy: torch.Tensor
    score: torch.Tensor


class MultiScaleFeatures(NamedTuple):
    """Keypoints of one image from :func:`extract_multiscale`.

    Attributes:
        xy: ``(N, 2)`` float32 sub-pixel ``(x, y)`` in the input tensor's pixels.
        scale: ``(N,)`` float32 pyramid scale at which each keypoint was found (1 = input).
        score: ``(N,)`` float32 ``repeatability * reliability``, sorted descending.
        desc: ``(N, D)`` float32 unit-norm descriptors.
    """

    xy: torch.Tensor
    scale: torch.Tensor
    score: torch.Tensor
    desc: torch.Tensor


def _check_map(t: torch.Tensor, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 4 or t.shape[1] != 1:
        raise ValueError(f"{name} must have shape (B, 1, H, W), got {tuple(t.shape)}")


def nms(rep: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Strict local maxima.

    A pixel is kept when it equals the maximum of its ``kernel x kernel`` neighbourhood
    and is strictly greater than the minimum there, so flat regions (e.g. a blank
    image) give no maxima.

    Args:
        rep: ``(B, 1, H, W)`` float map.
        kernel: odd window size.

    Returns:
        ``(B, 1, H, W)`` bool mask.

    On the CPU the window's maximum and minimum are ``cv2.dilate`` and ``cv2.erode``
    (edges replicated; 1.7 against 2.3 ms on the default model's 832 x 997 map at 2
    threads of an AMD EPYC), elsewhere separable elementwise maxima and minima
    (:func:`_rank_filter`): the same mask (maxima and minima are exact).
    """
    _check_map(rep, "rep")
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be a positive odd integer, got {kernel}")
    if rep.device.type == "cpu" and rep.dtype in (torch.float32, torch.float64):
        return _nms_cv2(rep, kernel)
    return _nms_torch(rep, kernel)


def _nms_torch(rep: torch.Tensor, kernel: int) -> torch.Tensor:
    """:func:`nms` by separable elementwise maxima and minima (any device)."""
    r = kernel // 2
    padded = F.pad(rep, (r, r, r, r), mode="replicate")  # once for both filters
    local_max = _rank_filter(padded, kernel, torch.maximum)
    local_min = _rank_filter(padded, kernel, torch.minimum)
    return (rep == local_max) & (rep > local_min)


def _nms_cv2(rep: torch.Tensor, kernel: int) -> torch.Tensor:
    """:func:`nms` of a CPU float map by ``cv2.dilate`` / ``cv2.erode`` per map."""
    window = np.ones((kernel, kernel), np.uint8)
    maps = rep.detach().reshape(-1, *rep.shape[-2:]).contiguous().numpy()
    out = np.empty(maps.shape, bool)
    for i, m in enumerate(maps):
        local_max = cv2.dilate(m, window, borderType=cv2.BORDER_REPLICATE)
        local_min = cv2.erode(m, window, borderType=cv2.BORDER_REPLICATE)
        out[i] = (m == local_max) & (m > local_min)
    return torch.from_numpy(out).view(rep.shape)


def _rank_filter(
    p: torch.Tensor, k: int, pick: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """k x k maximum or minimum filter (``pick`` = ``torch.maximum`` / ``torch.minimum``)
    of a map whose edge pixels were replicated ``k // 2`` times on every side (``p``,
    ``(B, 1, H + k - 1, W + k - 1)``; returns ``(B, 1, H, W)``), separable, as
    elementwise maxima or minima.

    About 10x faster than ``max_pool2d`` on the CPU for small ``k``.
    """
    w, h = p.shape[-1] - (k - 1), p.shape[-2] - (k - 1)
    rows = p[..., :, 0:w]
    for i in range(1, k):
        rows = pick(rows, p[..., :, i : i + w])
    out = rows[..., 0:h, :]
    for i in range(1, k):
        out = pick(out, rows[..., i : i + h, :])
    return out


def smooth_map(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of ``(B, C, H, W)`` float maps, edges replicated.

    The kernel is ``2 * ceil(3 sigma) + 1`` pixels wide. On the CPU each map goes
    through ``cv2.GaussianBlur`` (a single-channel ``conv2d`` is ~50x slower there);
    elsewhere through ``kornia.filters.gaussian_blur2d`` with the same kernel (the two
    agree to float32 rounding).

    Args:
        maps: ``(B, C, H, W)`` float32 tensor.
        sigma: standard deviation in pixels; 0 returns ``maps`` itself.

    Returns:
        ``(B, C, H, W)`` float32, on ``maps``' device.
    """
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    if sigma == 0:
        return maps
    k = 2 * math.ceil(3 * sigma) + 1
    if maps.device.type != "cpu":
        import kornia

        return kornia.filters.gaussian_blur2d(maps, (k, k), (sigma, sigma), "replicate")
    b, c, h, w = maps.shape
    src = maps.detach().float().reshape(b * c, h, w).contiguous().numpy()
    out = np.empty_like(src)
    for i in range(b * c):
        cv2.GaussianBlur(src[i], (k, k), sigma, out[i], sigma, cv2.BORDER_REPLICATE)
    return torch.from_numpy(out).view(b, c, h, w)


def erode_mask(valid: torch.Tensor, border: int) -> torch.Tensor:
    """Shrink a bool mask by ``border`` pixels (square window); outside the image is invalid.

    On the CPU by ``cv2.erode`` (~10x faster), elsewhere by counting the invalid pixels of
    each window in an integral image; the two agree exactly.

    Args:
        valid: ``(B, 1, H, W)`` bool.
        border: erosion radius in pixels (0 returns the mask unchanged).

    Returns:
        ``(B, 1, H, W)`` bool.
    """
    if border <= 0:
        return valid
    if valid.device.type == "cpu":
        return _erode_cv2(valid, border)
    return _erode_counting(valid, border)


def _erode_cv2(valid: torch.Tensor, border: int) -> torch.Tensor:
    kernel = np.ones((2 * border + 1,) * 2, np.uint8)
    masks = np.ascontiguousarray(valid.numpy(), dtype=np.uint8).reshape(-1, *valid.shape[-2:])
    out = [cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) for m in masks]
    return torch.from_numpy(np.stack(out).astype(bool)).view(valid.shape)


def _erode_counting(valid: torch.Tensor, border: int) -> torch.Tensor:
    k = 2 * border + 1  # the invalid pixels per window from an integral image: O(1)/px
    invalid = F.pad((~valid).to(torch.int32), (border + 1, border, border + 1, border), value=1)
    c = invalid.cumsum(-1).cumsum(-2)
    count = c[..., k:, k:] - c[..., :-k, k:] - c[..., k:, :-k] + c[..., :-k, :-k]
    return count == 0


def select_keypoints(
    rep: torch.Tensor,
    rel: torch.Tensor,
    valid_mask: torch.Tensor | None,
    rep_thr: float = _D.rep_thr,
    rel_thr: float = _D.rel_thr,
    max_keypoints: int = _D.max_keypoints,
    nms_size: int = 3,
) -> Candidates:
    """Local maxima of ``rep`` above both thresholds, top ``max_keypoints`` per image by
    ``rep * rel``.

    Args:
        rep: ``(B, 1, H, W)`` repeatability in [0, 1].
        rel: ``(B, 1, H, W)`` reliability in [0, 1].
        valid_mask: ``(B, 1, H, W)`` bool where keypoints may lie, or None.
        rep_thr: minimum repeatability.
        rel_thr: minimum reliability.
        max_keypoints: maximum number of keypoints per image.
        nms_size: side of the (odd) non-maximum suppression window.

    Returns:
        :class:`Candidates`, grouped by image and sorted by descending score within an
        image (stable: ties keep raster order).
    """
    _check_map(rep, "rep")
    _check_map(rel, "rel")
    if rel.shape != rep.shape:
        raise ValueError(f"rel must have rep's shape {tuple(rep.shape)}, got {tuple(rel.shape)}")
    if _numpy_ready(rep, rel, valid_mask):
        b, y, x, s = _candidates_numpy(rep, rel, valid_mask, rep_thr, rel_thr, nms_size)
    else:
        keep = nms(rep, nms_size) & (rep >= rep_thr) & (rel >= rel_thr)
        if valid_mask is not None:
            keep &= valid_mask
        b, _, y, x = keep.nonzero(as_tuple=True)
        s = rep[b, 0, y, x] * rel[b, 0, y, x]
    order = _top_k_per_image(b, s, max_keypoints)
    return Candidates(b[order], torch.stack([x[order], y[order]], dim=1), s[order])


def _numpy_ready(rep: torch.Tensor, rel: torch.Tensor, valid: torch.Tensor | None) -> bool:
    """Whether :func:`_candidates_numpy` takes these maps (CPU float32/64, a bool mask
    of their shape)."""
    floats = (torch.float32, torch.float64)
    maps_ok = all(t.device.type == "cpu" and t.dtype in floats for t in (rep, rel))
    return maps_ok and (
        valid is None
        or (valid.device.type == "cpu" and valid.dtype == torch.bool and valid.shape == rep.shape)
    )


def _candidates_numpy(
    rep: torch.Tensor,
    rel: torch.Tensor,
    valid_mask: torch.Tensor | None,
    rep_thr: float,
    rel_thr: float,
    nms_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`select_keypoints`' candidates ``(batch, y, x, score)`` of CPU maps, in
    raster order, by numpy: the same values as the torch expressions (comparisons and
    one float32 product are exact), the thresholds and the index search about 5x faster
    on a full-resolution map (torch's comparisons of a ``(1, 1, 832, 997)`` map: 0.8 ms
    each, numpy's 0.08 ms; ``torch.nonzero`` 1.5 ms, ``np.flatnonzero`` 0.24 ms; 1
    thread of an AMD EPYC)."""
    r = rep.detach().contiguous().numpy().reshape(-1)
    q = rel.detach().contiguous().numpy().reshape(-1)
    keep = nms(rep, nms_size).numpy().reshape(-1) & (r >= rep_thr) & (q >= rel_thr)
    if valid_mask is not None:
        keep &= valid_mask.contiguous().numpy().reshape(-1)
    flat = np.flatnonzero(keep)
    h, w = rep.shape[-2:]
    b, rest = np.divmod(flat, h * w)
    y, x = np.divmod(rest, w)
    score = r[flat] * q[flat]
    return tuple(torch.from_numpy(a) for a in (b, y, x, score))  # type: ignore[return-value]


def _top_k_per_image(batch: torch.Tensor, score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices sorting by (image, -score), keeping the first ``k`` of each image."""
    order = torch.sort(score, descending=True, stable=True).indices
    order = order[torch.sort(batch[order], stable=True).indices]
    sorted_batch = batch[order]
    counts = torch.bincount(sorted_batch, minlength=1)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order), device=batch.device) - starts[sorted_batch]
    return order[rank < k]


def subpixel_refine(
    rep: torch.Tensor, xy: torch.Tensor, batch: torch.Tensor | None = None
) -> torch.Tensor:
    """Refine integer peaks with a quadratic fit of their 3x3 neighbourhood.

    The offset is ``-H^-1 g`` with the finite-difference gradient ``g`` and Hessian
    ``H`` of ``rep`` at the peak; it is zero where ``H`` is not negative definite, and
    clipped to [-0.5, 0.5] per axis.

    Args:
        rep: ``(B, 1, H, W)`` float map (the one whose maxima were taken).
        xy: ``(N, 2)`` integer ``(x, y)`` peak positions.
        batch: ``(N,)`` image index of each peak (all 0 when None).

    Returns:
        ``(N, 2)`` float32 refined ``(x, y)``.
    """
    _check_map(rep, "rep")
    xy = xy.long()
    if batch is None:
        batch = torch.zeros(len(xy), dtype=torch.long, device=xy.device)
    values = rep[:, 0].float()
    h, w = values.shape[-2:]
    x, y = xy[:, 0], xy[:, 1]

    def at(dx: int, dy: int) -> torch.Tensor:  # edge pixels replicated
        return values[batch, (y + dy).clamp(0, h - 1), (x + dx).clamp(0, w - 1)]

    c = at(0, 0)
    gx, gy = (at(1, 0) - at(-1, 0)) / 2, (at(0, 1) - at(0, -1)) / 2
    hxx, hyy = at(1, 0) + at(-1, 0) - 2 * c, at(0, 1) + at(0, -1) - 2 * c
    hxy = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / 4
    det = hxx * hyy - hxy * hxy
    ok = (hxx < 0) & (det > 1e-12)
    safe = torch.where(ok, det, torch.ones_like(det))
    ox = torch.where(ok, -(hyy * gx - hxy * gy) / safe, torch.zeros_like(det))
    oy = torch.where(ok, -(hxx * gy - hxy * gx) / safe, torch.zeros_like(det))
    offset = torch.stack([ox, oy], dim=1).clamp(-0.5, 0.5)
    return xy.float() + offset


def pixel_to_grid(xy: torch.Tensor, stride: int, map_size: tuple[int, int]) -> torch.Tensor:
    """``grid_sample`` coordinates (``align_corners=False``) of input pixels ``(..., 2)``.

    Input pixel ``x`` (pixel centres at integers) lies at feature coordinate
    ``u = x / stride`` of a map of ``map_size = (h, w)`` cells; normalised, that is
    ``(2 u + 1) / w - 1`` (and likewise for ``y`` with ``h``).
    """
    h, w = map_size
    size = torch.tensor([w, h], dtype=xy.dtype, device=xy.device)
    return (2.0 * xy / stride + 1.0) / size - 1.0


def sample_descriptors(
    desc: torch.Tensor,
    xy: torch.Tensor,
    stride: int = 1,
    batch: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bilinearly sample unit descriptors at pixel coordinates.

    The feature coordinate of input pixel ``x`` is ``u = x / stride``; with
    ``grid_sample(align_corners=False)`` that is the normalised coordinate
    ``(2 u + 1) / w - 1`` (``w`` = map width; likewise y). Points outside the map read
    zero padding. Results are L2-normalised.

    Args:
        desc: ``(B, D, h, w)`` descriptor map.
        xy: ``(N, 2)`` float ``(x, y)`` in input pixels (the map covers ``stride`` times
            its size in pixels).
        stride: input pixels per descriptor cell.
        batch: ``(N,)`` image index of each point (all 0 when None).

    Returns:
        ``(N, D)`` rows of unit L2 norm (zero rows for points far outside), float32 or
        the floating dtype of ``desc``.
    """
    if desc.ndim != 4:
        raise ValueError(f"desc must have shape (B, D, h, w), got {tuple(desc.shape)}")
    n, d = xy.shape[0], desc.shape[1]
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=desc.device)
    dtype = desc.dtype if desc.is_floating_point() else torch.float32
    out = desc.new_zeros((n, d), dtype=dtype)
    grid_all = pixel_to_grid(xy.to(device=desc.device, dtype=dtype), stride, desc.shape[-2:])
    for b in range(desc.shape[0]):  # loop over images, not keypoints
        sel = (batch == b).nonzero(as_tuple=True)[0]
        if len(sel) == 0:
            continue
        grid = grid_all[sel].view(1, 1, -1, 2)
        sampled = F.grid_sample(desc[b : b + 1].to(dtype), grid, align_corners=False)
        out[sel] = sampled[0, :, 0].t()
    return F.normalize(out, dim=1)


def pyramid_scales(
    height: int,
    width: int,
    scale_f: float = _D.scale_f,
    min_scale: float = _D.min_scale,
    max_scale: float = 1.0,
    min_size: int = DEFAULT_MIN_SIZE,
) -> list[float]:
    """Scales ``max_scale, max_scale / scale_f, ...`` down to ``min_scale`` (inclusive).

    Levels whose shorter side would be smaller than ``min_size`` pixels are skipped. At
    least one level (``max_scale``) is always returned.
    """
    if scale_f <= 1.0:
        raise ValueError(f"scale_f must be > 1, got {scale_f}")
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
    scales, s = [], float(max_scale)
    while s >= min_scale * (1 - 1e-6) and (not scales or min(height, width) * s >= min_size):
        scales.append(s)
        s /= scale_f
    return scales


@torch.inference_mode()
def extract_multiscale(
    net: nn.Module,
    image: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    scale_f: float = _D.scale_f,
    min_scale: float = _D.min_scale,
    max_scale: float = 1.0,
    rep_thr: float = _D.rep_thr,
    rel_thr: float = _D.rel_thr,
    max_keypoints: int = _D.max_keypoints,
    min_size: int = DEFAULT_MIN_SIZE,
    border: int = _D.border,
    levels: list[float] | None = None,
    nms_size: int = 3,
    rep_blur: float = _D.rep_blur,
) -> list[MultiScaleFeatures]:
    """Multi-scale keypoints and descriptors of a batch of images.

    For each pyramid scale (see :func:`pyramid_scales`), the images are resized with
    bilinear antialiased ``F.interpolate`` to ``round(H s) x round(W s)``; keypoints are
    selected with :func:`select_keypoints` on the repeatability smoothed by
    ``rep_blur`` (:func:`smooth_map`) inside the resized ``valid`` mask eroded by
    ``border`` level pixels (which also drops the image border), refined with
    :func:`subpixel_refine` on that smoothed repeatability, described from that level's descriptor
    map, and mapped back with ``x = (x_s + 0.5) / s_x - 0.5`` (exact per-axis factors).
    The top ``max_keypoints`` by score over all levels are kept.

    Args:
        net: network returning ``(desc, rel, rep)``; ``net.descriptor_stride`` is used.
        image: ``(B, 3, H, W)`` float32 normalised RGB (see ``preprocess.to_tensor``).
        valid: ``(B, 1, H, W)`` bool region of interest, or None (whole image).
        scale_f: ratio between successive pyramid scales (> 1).
        min_scale: smallest scale (the paper stops below 1/3).
        max_scale: first (largest) scale.
        rep_thr: repeatability threshold.
        rel_thr: reliability threshold.
        max_keypoints: keypoints kept per image over all scales.
        min_size: smallest level side in pixels.
        border: erosion of ``valid`` in level pixels.
        levels: explicit list of scales overriding the pyramid parameters.
        nms_size: non-maximum suppression window (level pixels, odd).
        rep_blur: Gaussian sigma (level pixels) of the repeatability's smoothing; 0 = none.

    Returns:
        One :class:`MultiScaleFeatures` per image, sorted by descending score.
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
    bsz, _, h, w = image.shape
    if valid is None:
        valid = torch.ones((bsz, 1, h, w), dtype=torch.bool, device=image.device)
    if valid.shape != (bsz, 1, h, w) or valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool tensor of shape {(bsz, 1, h, w)}")
    if levels is None:
        levels = pyramid_scales(h, w, scale_f, min_scale, max_scale, min_size)
    per_level = [
        _extract_level(
            net, image, valid, s, rep_thr, rel_thr, max_keypoints, border, nms_size, rep_blur
        )
        for s in levels
    ]
    return [_merge_levels([lvl[b] for lvl in per_level], max_keypoints) for b in range(bsz)]


def _run_level(
    net: nn.Module, image: torch.Tensor, scale: float
) -> tuple[tuple[int, int], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Network outputs at one pyramid scale: ``(size (h, w), desc, rel, rep)``."""
    h, w = image.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size != (h, w):
        image = F.interpolate(image, size=size, mode="bilinear", antialias=True)
    desc, rel, rep = net(image.contiguous(memory_format=torch.channels_last))
    return size, desc, rel, rep


def _level_factor(size: tuple[int, int], h: int, w: int, device: torch.device) -> torch.Tensor:
    """Exact per-axis resize factors ``(sx, sy)`` of a level, shape (2,)."""
    return torch.tensor([size[1] / w, size[0] / h], dtype=torch.float32, device=device)


def _extract_level(
    net: nn.Module,
    image: torch.Tensor,
    valid: torch.Tensor,
    scale: float,
    rep_thr: float,
    rel_thr: float,
    max_keypoints: int,
    border: int,
    nms_size: int,
    rep_blur: float,
) -> list[MultiScaleFeatures]:
    """Keypoints of one pyramid level, in input-tensor coordinates, per image."""
    h, w = image.shape[-2:]
    size, desc, rel, rep = _run_level(net, image, scale)
    rep = smooth_map(rep, rep_blur)
    valid_s = valid  # bilinear to the same size is the identity
    if tuple(size) != tuple(valid.shape[-2:]):
        valid_s = F.interpolate(valid.float(), size=size, mode="bilinear") > 0.5
    region = erode_mask(valid_s, border)
    cand = select_keypoints(rep, rel, region, rep_thr, rel_thr, max_keypoints, nms_size)
    xy_s = subpixel_refine(rep, cand.xy, cand.batch)
    d = sample_descriptors(desc, xy_s, getattr(net, "descriptor_stride", 1), cand.batch)
    xy = (xy_s + 0.5) / _level_factor(size, h, w, xy_s.device) - 0.5
    scales = torch.full_like(cand.score, scale)
    return [
        MultiScaleFeatures(xy[sel], scales[sel], cand.score[sel], d[sel])
        for sel in (cand.batch == b for b in range(image.shape[0]))
    ]


@torch.inference_mode()
def describe_at(
    net: nn.Module, image: torch.Tensor, xy: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Descriptors at given points, each computed at its own pyramid scale.

    The network runs once per distinct value of ``scale``; each point is described from
    that level's map at ``x_s = (x + 0.5) * s_x - 0.5`` (exact per-axis factors).

    Args:
        net: network returning ``(desc, rel, rep)``.
        image: ``(1, 3, H, W)`` float32 normalised RGB.
        xy: ``(N, 2)`` float ``(x, y)`` in the image's pixels.
        scale: ``(N,)`` float pyramid scale per point (e.g. from :func:`pyramid_scales`).

    Returns:
        ``(N, D)`` float32 unit-norm descriptors.
    """
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"image must have shape (1, 3, H, W), got {tuple(image.shape)}")
    h, w = image.shape[-2:]
    xy = xy.float().to(image.device)
    out: torch.Tensor | None = None
    for s in torch.unique(scale).tolist():
        sel = (scale == s).nonzero(as_tuple=True)[0].to(image.device)
        size, desc, _, _ = _run_level(net, image, s)
        xy_s = (xy[sel] + 0.5) * _level_factor(size, h, w, image.device) - 0.5
        d = sample_descriptors(desc, xy_s, getattr(net, "descriptor_stride", 1))
        out = d.new_zeros((len(xy), d.shape[1])) if out is None else out
        out[sel] = d
    if out is None:
        dim = getattr(net, "dim", 128)
        return torch.zeros((0, dim), dtype=torch.float32, device=image.device)
    return out


def _merge_levels(levels: list[MultiScaleFeatures], max_keypoints: int) -> MultiScaleFeatures:
    """Concatenate levels and keep the top ``max_keypoints`` (stable: larger scale first)."""
    merged = MultiScaleFeatures(*(torch.cat(parts) for parts in zip(*levels, strict=True)))
    order = torch.sort(merged.score, descending=True, stable=True).indices[:max_keypoints]
    return MultiScaleFeatures(*(t[order] for t in merged))


def octave_of(scale: torch.Tensor, scale_f: float = _D.scale_f) -> torch.Tensor:
    """Pyramid level index (0 = scale 1) of keypoints found at ``scale``: ``(N,)`` int64."""
    return torch.round(-torch.log(scale) / math.log(scale_f)).long()
