"""The networks' inference pieces: BatchNorm folding and the thread-stable 1x1 heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fundusfeat.features import models
from fundusfeat.features.network import (
    StablePointwise,
    class_difference,
    fold_for_inference,
    replicate_pad,
    stable_sigmoid,
)


def _reference(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The fixed order spelled out: bias + w[0] x[0], then + w[c] x[c], each rounded."""
    w, b = conv.weight[:, :, 0, 0], conv.bias
    out = b.view(1, -1, 1, 1) + w[:, 0].view(1, -1, 1, 1) * x[:, 0:1]
    for c in range(1, conv.in_channels):
        out = out + w[:, c].view(1, -1, 1, 1) * x[:, c : c + 1]
    return out


@pytest.mark.parametrize(
    ("channels", "side"), [((16, 8), 253), ((8, 2), 301), ((128, 2), 127), ((3, 5), 37)]
)
def test_stable_pointwise_is_the_conv_at_any_thread_count(channels, side):
    torch.manual_seed(0)
    conv = nn.Conv2d(*channels, 1)
    x = torch.randn(2, channels[0], side, side + 14)
    head = StablePointwise(conv)
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            with torch.no_grad():
                outs.append(head(x.contiguous(memory_format=torch.channels_last)))
                outs.append(head(x))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(outs[0], o) for o in outs[1:])  # any thread count and layout
    traced = head(x)  # with autograd on (export, conversion): the plain loop
    with torch.no_grad():
        assert torch.equal(traced.detach(), _reference(conv, x))  # bitwise the stated order
        torch.testing.assert_close(outs[0], conv(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(traced, conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["fast", "lean", "lean-s1", "lean-dw", "lean-dw-s1"])
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


@pytest.mark.parametrize(
    ("name", "equivariant"),
    [("lean-s1", True), ("lean-dw-s1", True), ("fast", True), ("lean", False)],
)
def test_whole_pixel_shift_moves_the_repeatability_with_the_image(name, equivariant):
    """The shipped weights: shifting the image by (3, 1) px shifts ``lean-s1``'s and
    ``fast``'s repeatability by exactly that away from the border (stride-1 keypoint
    layers), while ``lean``'s pixel-shuffled half-resolution map changes (its stem's
    phase moves by an odd pixel)."""
    from fundusfeat.features.checkpoint import load_network

    net = fold_for_inference(load_network(name, device="cpu"))
    torch.manual_seed(2)
    x = torch.nn.functional.avg_pool2d(torch.randn(1, 3, 100, 124), 3, 1, 1)  # smooth texture
    dx, dy, m = 3, 1, 24  # shift, and a margin beyond the 17-px receptive field
    with torch.no_grad():
        rep = net(x[..., :-dy, :-dx].contiguous())[2]
        moved = net(x[..., dy:, dx:].contiguous())[2]
    a, b = rep[..., dy + m : -m, dx + m : -m], moved[..., m : -m - dy, m : -m - dx]
    if equivariant:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    else:
        assert (a - b).abs().max() > 1e-2


@pytest.mark.parametrize(("h", "w"), [(67, 90), (66, 91)])
def test_softmax_before_the_pixel_shuffle_is_the_same_map(h, w):
    """lean's repeatability: the two-class softmax taken on the half-resolution logits,
    then shuffled and cropped, equals shuffling first (up to the last bits of a few
    elements: torch's softmax rounds exp differently on its vector and scalar paths)."""
    from torch.nn import functional as F

    from fundusfeat.features.network import _shuffled_two_class

    torch.manual_seed(3)
    logits = torch.randn(2, 8, (h + 1) // 2, (w + 1) // 2) * 4
    for x in (logits, logits.contiguous(memory_format=torch.channels_last)):
        want = F.softmax(F.pixel_shuffle(x, 2)[:, :, :h, :w], dim=1)[:, 1:2]
        torch.testing.assert_close(_shuffled_two_class(x, h, w), want, rtol=0, atol=1e-7)


def test_stable_sigmoid_is_bitwise_the_same_at_any_thread_count():
    # torch.sigmoid itself differs in the last bit at some thread counts (the scalar
    # tail of each thread's share)
    x = torch.randn(1, 1, 834, 998, generator=torch.Generator().manual_seed(5)) * 8
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3, 4):
            torch.set_num_threads(n)
            with torch.inference_mode():
                outs.append(stable_sigmoid(x))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    torch.testing.assert_close(outs[0], torch.sigmoid(x), rtol=0, atol=1e-7)
    assert outs[0].shape == x.shape


@pytest.mark.parametrize("out_channels", [2, 8])
def test_class_difference_gives_the_softmax_class_one_probability(out_channels):
    torch.manual_seed(3)
    conv = nn.Conv2d(5, out_channels, 1)
    x = torch.randn(2, 5, 9, 11)
    k = out_channels // 2
    with torch.no_grad():
        logits = conv(x)
        prob = torch.softmax(logits.reshape(2, 2, k, 9, 11), dim=1)[:, 1]
        torch.testing.assert_close(torch.sigmoid(class_difference(conv)(x)), prob)
    with pytest.raises(ValueError, match="even"):
        class_difference(nn.Conv2d(5, 3, 1))


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("pad", [(1, 1, 1, 1), (0, 1, 0, 1), (2, 0, 0, 2), (0, 0, 0, 0)])
def test_replicate_pad_is_f_pad(pad, channels_last):
    x = torch.randn(2, 5, 13, 8, generator=torch.Generator().manual_seed(0))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    want = torch.nn.functional.pad(x, pad, mode="replicate")
    with torch.inference_mode():
        got = replicate_pad(x, pad)
    assert torch.equal(got, want) and got.is_contiguous(memory_format=fmt)
    with torch.enable_grad():  # under autograd it is F.pad itself
        y = x.clone().requires_grad_(True)
        assert torch.equal(replicate_pad(y, pad), want)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_inference_conv_is_the_conv(channels_last, relu):
    """The padding written out (dilation 4): the same function as the conv (up to
    rounding), bitwise the same at 1 and 2 threads; the fused ReLU: bitwise the conv
    then ``relu_`` (dilation 2; an input over 20 480 elements, which torch's own conv
    also gives oneDNN); under autograd the conv (and ReLU) itself."""
    from fundusfeat.features.network import InferenceConv, zero_pad

    torch.manual_seed(4)
    x = torch.randn(1, 4, 64, 97)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    padded = zero_pad(x, (1, 2, 3, 4))
    assert torch.equal(padded, torch.nn.functional.pad(x, (1, 2, 3, 4)))
    assert padded.is_contiguous(memory_format=torch.channels_last) == channels_last

    def plain(conv, y):
        out = conv(y)
        return out.relu() if relu else out

    wide = nn.Conv2d(4, 4, 3, padding=4, dilation=4)
    near = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
    assert InferenceConv(wide).prepad and not InferenceConv(near).prepad
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.inference_mode():
                outs.append((InferenceConv(wide, relu)(x), InferenceConv(near, relu)(x)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(outs[0], outs[1], strict=True))
    with torch.no_grad():
        torch.testing.assert_close(outs[0][0], plain(wide, x), rtol=1e-5, atol=1e-5)
        assert torch.equal(outs[0][1], plain(near, x))
    y = x.clone().requires_grad_(True)
    assert torch.equal(InferenceConv(wide, relu)(y), plain(wide, y))
    with pytest.raises(ValueError, match="zero padding"):
        InferenceConv(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))


def test_folding_fuses_the_relus_and_pads_wide_dilations():
    """Folded, every conv of the default network that a ReLU follows runs it fused, and
    the dilation-4 keypoint conv has its padding written out; no ReLU module is left."""
    from fundusfeat.features.network import InferenceConv

    folded = fold_for_inference(models.get("lean-dw-s1").build())
    wrapped = [m for m in folded.modules() if isinstance(m, InferenceConv)]
    assert [m.conv.dilation for m in wrapped if m.prepad] == [(4, 4)]
    assert sum(m.relu for m in wrapped) == 10
    assert not any(isinstance(m, nn.ReLU) for m in folded.modules())
    inner = {id(m.conv) for m in wrapped}
    plain = [m for m in folded.modules() if type(m) is nn.Conv2d and id(m) not in inner]
    assert all(max(m.dilation) < 3 for m in plain)
