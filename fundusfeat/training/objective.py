"""The training objective of one batch of pairs: repeatability + descriptor/reliability.

``L = pair_weight * (L_desc + rep_weight * (L_cosim + peaky_weight * (L_peaky(S1) +
L_peaky(S2))) + loc_weight * L_loc) + distill_weight * L_distill``

- ``L_cosim``/``L_peaky``: the paper's repeatability terms on N x N windows.
- ``L_desc`` with ``descriptor = "ap"``: the paper's ``1 - AP * R - k (1 - R)`` averaged
  over the query points of both images (AP is differentiable and trains the
  descriptors through this term).
- ``L_desc`` with ``descriptor = "infonce"``: the InfoNCE cross-entropy of the true
  correspondence among all grid points of the partner image, plus a binary
  cross-entropy that makes R predict the (detached) softmax probability of the true
  match. (The paper's linear form ``1 - q R - k (1 - R)`` drives R to 0 through the
  softmax while the early qualities are below k, where its gradient vanishes; the
  cross-entropy keeps a gradient ``R - q`` on the logit and calibrates R as the
  probability that the descriptor matches.) With ``near_negatives = K`` each query
  also competes with K points 2-6 px from its true match (``near_radius``).
- ``L_distill`` (``distill_weight``): the student's repeatability, reliability and
  descriptors fitted to a frozen teacher's on the same images
  (:func:`~fundusfeat.training.losses.distillation_terms`).
- ``L_loc``: the sub-pixel localisation loss
  (:func:`~fundusfeat.training.losses.localization_loss`), which rewards heatmap peaks
  that move with the image by fractions of a pixel.
"""

from __future__ import annotations

import torch
from torch import nn

from fundusfeat.features.tensors import normalize_rgb
from fundusfeat.training.config import LossConfig
from fundusfeat.training.losses import (
    Correspondences,
    NearNegatives,
    correspondences,
    cosim_loss,
    descriptor_terms,
    distillation_terms,
    localization_loss,
    near_offsets,
    peaky_loss,
    reliability_bce,
    reliability_loss,
    sample_maps,
    sample_unit_descriptors,
    warp_to_first,
)
from fundusfeat.training.pairs import PairBatch


def batch_loss(
    net: nn.Module,
    batch: PairBatch,
    cfg: LossConfig,
    offset: tuple[float, float],
    generator: torch.Generator | None = None,
    teacher: nn.Module | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of a batch and its terms.

    Args:
        net: a network of :mod:`fundusfeat.features.network` (possibly wrapped in DDP).
        batch: the pairs, on the network's device.
        cfg: the loss settings.
        offset: (x, y) shift in [0, grid_step) of the query grid for this batch (its
            integer part also places the localisation loss's cells).
        generator: CPU generator of the close negatives' offsets (None: seeded 0).
        teacher: the frozen network whose outputs the distillation loss fits
            (``cfg.distill_weight > 0``).

    Returns:
        The scalar loss and a dict of floats: loss, desc, cosim, peaky, loc (0 when
        off), quality (mean matching quality of valid queries), rel (mean reliability
        there), mnn_accuracy (mutual nearest neighbours of grid descriptors that are
        right).
    """
    b, _, h, w = batch.image1.shape
    images = normalize_rgb(torch.cat([batch.image1, batch.image2]))
    images = images.contiguous(memory_format=torch.channels_last)
    desc, rel, rep = net(images)
    desc, rel, rep = desc.float(), rel.float(), rep.float()
    stride = _stride_of(net)
    rep1, rep2 = rep[:b], rep[b:]

    # the pair terms are always reported; without weight (pure distillation) they are
    # computed without autograd: no backward through them, and a non-finite one cannot
    # reach the gradient as 0 x inf
    with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.pair_weight > 0):
        valid12 = batch.valid1 * (warp_to_first(batch.valid2, batch.H, h, w) > 0.99).float()
        rep2_in_1 = warp_to_first(rep2, batch.H, h, w)
        cosim = cosim_loss(rep1, rep2_in_1, valid12, cfg.window, cfg.cosim_centered)
        peaky = peaky_loss(rep1, batch.valid1, cfg.window) + peaky_loss(
            rep2, batch.valid2, cfg.window
        )

        loc = rep1.new_zeros(())
        if cfg.loc_weight > 0:
            cells = (int(offset[0]), int(offset[1]))
            loc = localization_loss(
                rep1, rep2_in_1, valid12, cfg.loc_window, cfg.loc_temperature, cells
            )

        corr = correspondences(batch.H, batch.valid1, batch.valid2, cfg.grid_step, offset)
        d1 = sample_unit_descriptors(desc[:b], corr.xy1, stride)
        d2 = sample_unit_descriptors(desc[b:], corr.xy2, stride)
        near = None
        if cfg.descriptor == "infonce" and cfg.near_negatives > 0:
            gen = generator if generator is not None else torch.Generator().manual_seed(0)
            near = _near_negatives(desc, batch, corr, stride, cfg, gen)
        quality, ce, accuracy = descriptor_terms(
            d1,
            d2,
            corr,
            cfg.descriptor,
            temperature=cfg.temperature,
            bins=cfg.ap_bins,
            ignore_radius=cfg.ap_neg_radius,
            near=near,
        )
        r = torch.stack(
            [sample_maps(rel[:b], corr.xy1)[..., 0], sample_maps(rel[b:], corr.xy2)[..., 0]]
        )
        n_valid = corr.valid.sum().clamp_min(1) * 2
        if cfg.descriptor == "infonce":
            per_point = reliability_bce(quality.detach(), r)
        else:
            per_point = reliability_loss(quality, r, cfg.k)
        rel_term = (per_point * corr.valid).sum() / n_valid
        desc_loss = rel_term + ce
        loss = (
            desc_loss + cfg.rep_weight * (cosim + cfg.peaky_weight * peaky) + cfg.loc_weight * loc
        )
    parts = _distillation(net, teacher, images, (desc, rel, rep), batch, corr, cfg)
    distill = parts[0] + parts[1] + cfg.distill_desc_weight * parts[2]
    pair = cfg.pair_weight * loss if cfg.pair_weight > 0 else loss.new_zeros(())
    loss = pair + cfg.distill_weight * distill
    terms = {
        "loss": loss.item(),
        "desc": desc_loss.item(),
        "cosim": cosim.item(),
        "peaky": peaky.item() / 2,
        "loc": loc.item(),
        "quality": (quality.detach() * corr.valid).sum().item() / n_valid.item(),
        "rel": (r.detach() * corr.valid).sum().item() / n_valid.item(),
        "mnn_accuracy": accuracy.item(),
        "distill": distill.item(),
        "distill_rep": parts[0].item(),
        "distill_rel": parts[1].item(),
        "distill_desc": parts[2].item(),
    }
    return loss, terms


def _distillation(
    net: nn.Module,
    teacher: nn.Module | None,
    images: torch.Tensor,
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    batch: PairBatch,
    corr: Correspondences,
    cfg: LossConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distillation terms ``(rep, rel, desc)`` of both images of every pair (zeros
    when off)."""
    if cfg.distill_weight <= 0:
        zero = outputs[1].new_zeros(())
        return zero, zero, zero
    if teacher is None:
        raise ValueError("loss.distill_weight > 0 needs a teacher network")
    with torch.no_grad():
        target = tuple(t.float() for t in teacher(images))
    valid = torch.cat([batch.valid1, batch.valid2])
    xy = torch.cat([corr.xy1, corr.xy1])  # the query grid, in every image
    strides = (_stride_of(net), _stride_of(teacher))
    return distillation_terms(outputs, target, valid, xy, strides, cfg.distill_peak_weight)


def _near_negatives(
    desc: torch.Tensor,
    batch: PairBatch,
    corr: Correspondences,
    stride: int,
    cfg: LossConfig,
    generator: torch.Generator,
) -> NearNegatives:
    """Descriptors ``near_radius`` px from each query's match, in both images."""
    b, n = corr.xy1.shape[:2]
    k = cfg.near_negatives
    parts = []
    for img, xy, valid in ((1, corr.xy2, batch.valid2), (0, corr.xy1, batch.valid1)):
        pts = xy[:, :, None] + near_offsets((b, n, k), cfg.near_radius, generator).to(xy.device)
        flat = pts.reshape(b, n * k, 2)
        d = sample_unit_descriptors(desc[img * b : (img + 1) * b], flat, stride)
        ok = sample_maps(valid, flat)[..., 0] > 0.99
        parts += [d.view(b, n, k, -1), ok.view(b, n, k)]
    return NearNegatives(d2=parts[0], valid2=parts[1], d1=parts[2], valid1=parts[3])


def _stride_of(net: nn.Module) -> int:
    return int(getattr(getattr(net, "module", net), "descriptor_stride", 1))
