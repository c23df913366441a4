"""The networks' inference pieces: BatchNorm folding and the fixed-order 1x1 heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fundusfeat.features import models
from fundusfeat.features.network import FixedOrderPointwise, fold_for_inference


def _reference(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The fixed order spelled out: bias + w[0] x[0], then + w[c] x[c], each rounded."""
    w, b = conv.weight[:, :, 0, 0], conv.bias
    out = b.view(1, -1, 1, 1) + w[:, 0].view(1, -1, 1, 1) * x[:, 0:1]
    for c in range(1, conv.in_channels):
        out = out + w[:, c].view(1, -1, 1, 1) * x[:, c : c + 1]
    return out


@pytest.mark.parametrize("channels", [(16, 8), (128, 2), (3, 5)])
def test_fixed_order_pointwise_is_the_conv_summed_in_order(channels):
    torch.manual_seed(0)
    conv = nn.Conv2d(*channels, 1)
    x = torch.randn(2, channels[0], 37, 51)
    head = FixedOrderPointwise(conv)
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad():
                outs.append(head(x))
    finally:
        torch.set_num_threads(threads)
    traced = head(x)  # with autograd on (export, conversion): the plain loop
    assert torch.equal(traced.detach(), outs[0])
    with torch.no_grad():
        assert torch.equal(outs[0], outs[1])  # any thread count
        assert torch.equal(outs[0], _reference(conv, x))  # bitwise the stated order
        torch.testing.assert_close(outs[0], conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["fast", "lean"])
def test_folded_network_computes_the_same_function(name):
    torch.manual_seed(1)
    net = models.get(name).build().eval()
    for m in net.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(1, 3, 67, 90)
    with torch.no_grad():
        for a, b in zip(net(x), fold_for_inference(net)(x), strict=True):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
