"""Validation during training: loss terms and matching accuracy on fixed held-back pairs."""

from __future__ import annotations

import torch
from torch import nn

from fundusfeat.training.config import LossConfig
from fundusfeat.training.objective import batch_loss
from fundusfeat.training.pairs import PairBatch


@torch.inference_mode()
def validate(
    net: nn.Module,
    batches: list[PairBatch],
    cfg: LossConfig,
    device: torch.device,
    teacher: nn.Module | None = None,
) -> dict[str, float]:
    """Mean loss terms (incl. ``mnn_accuracy``) of the network in eval mode on fixed pairs.

    The query grid is fixed (offset of half a step) so numbers are comparable
    across steps and runs.
    """
    was_training = net.training
    net.eval()
    sums: dict[str, float] = {}
    offset = (cfg.grid_step / 2, cfg.grid_step / 2)
    try:
        for batch in batches:
            _, terms = batch_loss(net, batch.to(device), cfg, offset, teacher=teacher)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v / len(batches)
    finally:
        net.train(was_training)
    return sums
