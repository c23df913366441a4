"""Training losses: the paper's repeatability and AP losses, and an InfoNCE alternative.

Conventions: pixel (x, y), centre of the top-left pixel at (0, 0). A pair is two
images of the same size (H, W) and a homography ``H`` (B, 3, 3) mapping image-1
pixels onto image-2 pixels. Point samples go through
:func:`fundusfeat.features.keypoints.sample_descriptors` (the same bilinear sampling as
inference, any descriptor stride).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.geometry.linalg import transform_points
from kornia.geometry.transform import warp_perspective

from fundusfeat.features.keypoints import pixel_to_grid, sample_descriptors

_EPS = 1e-8


def pixel_grid(h: int, w: int, step: int, offset: tuple[float, float], device) -> torch.Tensor:
    """(N, 2) float32 (x, y) points on a regular grid of ``step`` pixels, shifted by ``offset``."""
    xs = torch.arange(0, w, step, device=device, dtype=torch.float32) + offset[0]
    ys = torch.arange(0, h, step, device=device, dtype=torch.float32) + offset[1]
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def sample_maps(maps: torch.Tensor, xy: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Bilinear samples of a (B, C, h, w) map at (B, N, 2) pixel points -> (B, N, C).

    The pixel-centre mapping of :func:`fundusfeat.features.keypoints.sample_descriptors`
    (feature coordinate ``x / stride``), without its L2 normalisation: for heatmaps
    and masks. Outside the map reads 0.
    """
    b, n = xy.shape[:2]
    grid = pixel_to_grid(xy, stride, maps.shape[-2:])
    out = F.grid_sample(maps, grid.view(b, 1, n, 2), align_corners=False)
    return out[:, :, 0].transpose(1, 2)


def sample_unit_descriptors(desc: torch.Tensor, xy: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, N, D) unit descriptors of a (B, D, h, w) map at (B, N, 2) pixel points."""
    b, n = xy.shape[:2]
    batch = torch.arange(b, device=xy.device).repeat_interleave(n)
    flat = sample_descriptors(desc, xy.reshape(-1, 2), stride=stride, batch=batch)
    return flat.view(b, n, -1)


def _window_valid(valid: torch.Tensor, n: int) -> torch.Tensor:
    """(B, L) 1 for the N x N windows (stride N/2) that are mostly valid."""
    frac = F.avg_pool2d(valid, n, stride=max(n // 2, 1))
    return (frac.flatten(1) > 0.5).float()


def cosim_loss(
    rep1: torch.Tensor,
    rep2_in_1: torch.Tensor,
    valid: torch.Tensor,
    window: int,
    centered: bool = False,
) -> torch.Tensor:
    """1 - mean cosine similarity of N x N windows of two aligned heatmaps (paper's L_cosim).

    Args:
        rep1: (B, 1, H, W) repeatability of image 1.
        rep2_in_1: (B, 1, H, W) repeatability of image 2 resampled in image 1's frame.
        valid: (B, 1, H, W) float, 1 where both are defined.
        window: N.
        centered: subtract each window's mean first (a correlation). The paper's plain
            cosine is dominated by a constant background: two windows of background 0.2
            with one peak each score 0.93 however far apart the peaks are, so a
            content-independent lattice of peaks satisfies it (seen with the fast
            network); the centred form scores such windows near 0.
    """
    stride = max(window // 2, 1)
    a = F.unfold(rep1 * valid, window, stride=stride)
    b = F.unfold(rep2_in_1 * valid, window, stride=stride)
    if centered:
        a = a - a.mean(1, keepdim=True)
        b = b - b.mean(1, keepdim=True)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + _EPS)
    weight = _window_valid(valid, window)
    return 1.0 - (cos * weight).sum() / weight.sum().clamp_min(1.0)


def peaky_loss(rep: torch.Tensor, valid: torch.Tensor, window: int) -> torch.Tensor:
    """1 - mean over pixels of (local max - local mean) of the heatmap (paper's L_peaky).

    The ``(window + 1)``-wide max and mean filters are separable (one pass per axis,
    the same values as the 2-D pools, far cheaper on the CPU).
    """
    k, pad = window + 1, window // 2
    mx = F.max_pool2d(F.max_pool2d(rep, (1, k), 1, (0, pad)), (k, 1), 1, (pad, 0))
    avg = F.avg_pool2d(rep, (1, k), 1, (0, pad), count_include_pad=False)
    avg = F.avg_pool2d(avg, (k, 1), 1, (pad, 0), count_include_pad=False)
    return 1.0 - ((mx - avg) * valid).sum() / valid.sum().clamp_min(1.0)


def localization_loss(
    rep1: torch.Tensor,
    rep2_in_1: torch.Tensor,
    valid: torch.Tensor,
    window: int,
    temperature: float,
    offset: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Sub-pixel agreement of the two heatmaps' peaks, window by window.

    Both maps are in image 1's frame (``rep2_in_1`` is image 2's repeatability sampled
    at the exact, sub-pixel correspondents of image-1 pixels). The map is cut into
    ``window x window`` cells starting at ``offset`` (a different offset each step, so
    no grid is preferred); in each cell the soft-argmax ``sum softmax(rep / T) * xy``
    of either map is a sub-pixel position, and the loss is their distance (pixels,
    Charbonnier ``sqrt(d^2 + 0.01)``), averaged over fully valid cells weighted by how
    peaked both maps are there (``max - mean``, not differentiated), so that flat cells
    do not count.

    Args:
        rep1: (B, 1, H, W) repeatability of image 1.
        rep2_in_1: (B, 1, H, W) repeatability of image 2 resampled in image 1's frame.
        valid: (B, 1, H, W) float, 1 where both are defined.
        window: cell side (pixels).
        temperature: softmax temperature (repeatability units).
        offset: (x, y) pixel offset of the cells, taken modulo ``window``.

    Returns:
        Scalar loss in pixels (0 when no cell is valid).
    """
    n = window
    ox, oy = int(offset[0]) % n, int(offset[1]) % n
    maps = torch.cat([rep1, rep2_in_1, valid], dim=1)[..., oy:, ox:]
    h, w = (maps.shape[-2] // n) * n, (maps.shape[-1] // n) * n
    if h == 0 or w == 0:
        return rep1.new_zeros(())
    cells = F.unfold(maps[..., :h, :w], n, stride=n).view(maps.shape[0], 3, n * n, -1)
    a, b, v = cells[:, 0], cells[:, 1], cells[:, 2]  # (B, n*n, L)
    ys, xs = torch.meshgrid(
        torch.arange(n, device=rep1.device, dtype=rep1.dtype),
        torch.arange(n, device=rep1.device, dtype=rep1.dtype),
        indexing="ij",
    )
    xy = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)  # (n*n, 2), unfold order
    pa = torch.einsum("bkl,kc->blc", (a / temperature).softmax(1), xy)
    pb = torch.einsum("bkl,kc->blc", (b / temperature).softmax(1), xy)
    err = torch.sqrt(((pa - pb) ** 2).sum(-1) + 0.01)
    peaked = ((a.amax(1) - a.mean(1)) * (b.amax(1) - b.mean(1))).detach()
    weight = peaked * (v.amin(1) > 0.99).to(peaked.dtype)
    return (err * weight).sum() / weight.sum().clamp_min(_EPS)


def warp_to_first(maps2: torch.Tensor, H: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Resample (B, C, H2, W2) maps of image 2 at the correspondents of image-1 pixels.

    ``out(p) = maps2(H p)`` with bilinear interpolation (``kornia``'s
    ``warp_perspective`` of the inverse map, pixel centres at integer coordinates).

    Returns (B, C, h, w); outside image 2 reads 0.
    """
    inverse = torch.linalg.inv(H.float())
    return warp_perspective(maps2, inverse, (h, w), align_corners=True, padding_mode="zeros")


def binned_ap(
    scores: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor, bins: int
) -> torch.Tensor:
    """Differentiable, histogram-binned average precision (one ranking per row).

    Each score in [-1, 1] is spread over the two nearest of ``bins`` equally spaced bin
    centres (triangular kernel); precision and recall are computed bin by bin from
    the highest score down. Exactly the sorted AP when every score sits on its own
    bin centre.

    Args:
        scores: (..., M) similarities in [-1, 1].
        positive: (..., M) bool, the relevant candidates.
        valid: (..., M) bool, candidates that take part in the ranking.
        bins: number of bin centres.

    Returns:
        (...) AP in [0, 1] (0 for rows without a valid positive).
    """
    delta = 2.0 / (bins - 1)
    pos = (positive & valid).to(scores.dtype)
    val = valid.to(scores.dtype)
    cum_pos = scores.new_zeros(scores.shape[:-1])
    cum_all = scores.new_zeros(scores.shape[:-1])
    ap = scores.new_zeros(scores.shape[:-1])
    for k in range(bins):  # bin centres from 1 down to -1
        centre = 1.0 - k * delta
        weight = (1.0 - (scores - centre).abs() / delta).clamp_min(0.0)
        rec = (weight * pos).sum(-1)
        cum_pos = cum_pos + rec
        cum_all = cum_all + (weight * val).sum(-1)
        ap = ap + rec * cum_pos / cum_all.clamp_min(_EPS)
    return ap / pos.sum(-1).clamp_min(_EPS)


def reliability_loss(quality: torch.Tensor, rel: torch.Tensor, k: float) -> torch.Tensor:
    """Elementwise ``1 - quality * R - k (1 - R)`` (the paper's AP-with-reliability form)."""
    return 1.0 - quality * rel - k * (1.0 - rel)


def reliability_bce(quality: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """Elementwise binary cross-entropy of the reliability ``rel`` against ``quality``.

    Both in [0, 1]; ``rel`` is clamped to [1e-6, 1 - 1e-6]. Written out (not
    ``F.binary_cross_entropy``) so that it is allowed under autocast.
    """
    r = rel.clamp(1e-6, 1.0 - 1e-6)
    return -(quality * torch.log(r) + (1.0 - quality) * torch.log1p(-r))


def near_offsets(
    shape: tuple[int, int, int], radius: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """(B, N, K, 2) random offsets of length uniform in ``radius`` and random direction.

    Drawn on the CPU from ``generator`` (reproducible whatever the device).
    """
    lo, hi = radius
    r = lo + (hi - lo) * torch.rand((*shape, 1), generator=generator)
    angle = 2.0 * torch.pi * torch.rand((*shape, 1), generator=generator)
    return torch.cat([r * torch.cos(angle), r * torch.sin(angle)], dim=-1)


@dataclass(frozen=True)
class NearNegatives:
    """Descriptors close to each query's true match, in the partner image.

    Attributes:
        d2: (B, N, K, D) unit descriptors of image 2 near ``xy2`` of each query.
        valid2: (B, N, K) bool, inside image 2's FOV.
        d1: (B, N, K, D) unit descriptors of image 1 near ``xy1`` (for 2 -> 1).
        valid1: (B, N, K) bool.
    """

    d2: torch.Tensor
    valid2: torch.Tensor
    d1: torch.Tensor
    valid1: torch.Tensor


@dataclass(frozen=True)
class Correspondences:
    """Query points of a batch and where they land.

    Attributes:
        xy1: (B, N, 2) query pixels in image 1.
        xy2: (B, N, 2) their correspondents in image 2 (through H).
        valid: (B, N) bool, inside both images' fields of view.
    """

    xy1: torch.Tensor
    xy2: torch.Tensor
    valid: torch.Tensor


def correspondences(
    H: torch.Tensor,
    valid1: torch.Tensor,
    valid2: torch.Tensor,
    step: int,
    offset: tuple[float, float],
) -> Correspondences:
    """Grid query points of image 1, their image-2 positions and validity."""
    b, _, h, w = valid1.shape
    xy1 = pixel_grid(h, w, step, offset, H.device).expand(b, -1, -1)
    xy2 = transform_points(H.float(), xy1)
    v1 = sample_maps(valid1, xy1)[..., 0] > 0.99
    v2 = sample_maps(valid2, xy2)[..., 0] > 0.99
    inside = (xy2[..., 0] >= 0) & (xy2[..., 0] <= w - 1) & (xy2[..., 1] >= 0)
    inside &= xy2[..., 1] <= h - 1
    return Correspondences(xy1.contiguous(), xy2, v1 & v2 & inside)


def _candidate_mask(corr: Correspondences, radius: float) -> torch.Tensor:
    """(B, N, N) bool: candidate j is usable for query i (valid; not in the ignore zone)."""
    valid = corr.valid[:, None, :] & corr.valid[:, :, None]
    if radius > 0:
        dist = torch.cdist(corr.xy2, corr.xy2)
        eye = torch.eye(dist.shape[-1], dtype=torch.bool, device=dist.device)
        valid &= (dist >= radius) | eye
    return valid


def descriptor_terms(
    d1: torch.Tensor,
    d2: torch.Tensor,
    corr: Correspondences,
    kind: str,
    *,
    temperature: float,
    bins: int,
    ignore_radius: float,
    near: NearNegatives | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-query matching quality, the descriptor loss and the mutual-NN accuracy.

    Args:
        d1, d2: (B, N, D) unit descriptors at ``corr.xy1`` / ``corr.xy2``.
        corr: the correspondences (query i of image 1 matches candidate i of image 2).
        kind: ``"ap"`` (quality = binned AP, loss computed by the caller through the
            reliability form) or ``"infonce"`` (quality = softmax probability of the
            true match, loss = cross-entropy).
        temperature: InfoNCE temperature.
        bins: AP bins.
        ignore_radius: candidates closer than this to the true match are left out.
        near: extra InfoNCE candidates close to each true match (ignored for ``"ap"``).

    Returns:
        quality: (2, B, N) for the directions 1->2 and 2->1 (0 where invalid).
        ce: scalar mean cross-entropy over valid queries (0 for ``"ap"``).
        accuracy: scalar, see :func:`mutual_nn_accuracy` (no gradient).
    """
    usable = _candidate_mask(corr, ignore_radius)
    sim = d1 @ d2.transpose(1, 2)  # (B, N, N)
    eye = torch.eye(sim.shape[-1], dtype=torch.bool, device=sim.device).expand_as(sim)
    qualities, ces = [], []
    extras = (
        (None, None) if near is None else ((d1, near.d2, near.valid2), (d2, near.d1, near.valid1))
    )
    for s, extra in zip((sim, sim.transpose(1, 2)), extras, strict=True):
        if kind == "ap":
            qualities.append(binned_ap(s, eye, usable, bins))
            ces.append(s.new_zeros(()))
            continue
        logits = (s / temperature).masked_fill(~usable, float("-inf"))
        if extra is not None:  # (B, N, K): each query against the K points near its match
            q, cand, ok = extra
            close = (q[:, :, None, :] * cand).sum(-1) / temperature
            logits = torch.cat([logits, close.masked_fill(~ok, float("-inf"))], dim=-1)
        n = s.shape[-1]
        logp = torch.diagonal(logits.log_softmax(-1)[..., :n], dim1=1, dim2=2)
        logp = torch.where(corr.valid, logp, torch.zeros_like(logp))
        qualities.append(logp.exp())
        ces.append(-(logp * corr.valid).sum() / corr.valid.sum().clamp_min(1))
    quality = torch.stack(qualities) * corr.valid
    return quality, sum(ces) / 2, mutual_nn_accuracy(sim.detach(), corr.valid)


def mutual_nn_accuracy(sim: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Fraction of valid queries whose mutual nearest neighbour is the true match.

    Args:
        sim: (B, N, N) descriptor similarities; query i corresponds to candidate i.
        valid: (B, N) bool.

    Returns:
        Scalar float tensor in [0, 1] (0 when nothing is valid).
    """
    sim = sim.masked_fill(~(valid[:, None, :] & valid[:, :, None]), -2.0)
    idx = torch.arange(sim.shape[-1], device=sim.device)
    ok = (sim.argmax(-1) == idx) & (sim.argmax(-2) == idx) & valid
    return ok.sum() / valid.sum().clamp_min(1)


def distillation_terms(
    student: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    valid: torch.Tensor,
    xy: torch.Tensor,
    strides: tuple[int, int],
    peak_weight: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The student's outputs fitted to the teacher's on the same images.

    Args:
        student, teacher: ``(descriptors, reliability, repeatability)`` of the networks
            on the same ``(B, 3, H, W)`` batch (the teacher's without gradient).
        valid: ``(B, 1, H, W)`` 1 inside the fields of view.
        xy: ``(B, N, 2)`` pixel points where the descriptors are compared.
        strides: descriptor strides ``(student, teacher)``.
        peak_weight: a pixel weighs ``1 + peak_weight x`` the teacher's repeatability.

    Returns:
        ``(rep, rel, desc)``: the weighted binary cross-entropy of the repeatability and
        of the reliability to the teacher's (soft targets; over valid pixels), and
        ``1 - cos`` between the unit descriptors at ``xy``.
    """
    (sd, srel, srep), (td, trel, trep) = student, teacher
    eps = 1e-6
    n = valid.sum().clamp_min(1.0)

    def bce(p: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        p = p.clamp(eps, 1 - eps)
        return -(w * (t * torch.log(p) + (1 - t) * torch.log(1 - p))).sum() / n

    rep = bce(srep, trep, valid * (1.0 + peak_weight * trep))
    rel = bce(srel, trel, valid)
    ds = sample_unit_descriptors(sd, xy, strides[0])
    dt = sample_unit_descriptors(td, xy, strides[1])
    inside = sample_maps(valid, xy)[..., 0] > 0.99
    cos = (ds * dt).sum(-1)
    desc = ((1.0 - cos) * inside).sum() / inside.sum().clamp_min(1)
    return rep, rel, desc
