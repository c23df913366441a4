"""Keypoint detector + descriptor networks.

Two architectures share one output contract and one training code path:

- ``R2D2Net`` (``"r2d2"``): the paper's fully convolutional Quad-L2-Net. Every
  layer keeps the input resolution (dilation instead of stride), about 0.48 M
  parameters and 0.48 M multiply-adds per input pixel.
- ``FastNet`` (``"fast"``): a CPU-friendly variant. A stride-8 encoder produces
  the descriptors (and their reliability) at 1/8 resolution; a light decoder with
  skip connections produces the repeatability heatmap at full resolution so that
  keypoints are localised to the pixel (and refined to sub-pixel downstream).
  Roughly 50x fewer multiply-adds per pixel than ``R2D2Net``.

``forward(images)`` takes ``(B, 3, H, W)`` float32 RGB images normalised by
:data:`IMAGE_MEAN` / :data:`IMAGE_STD` and returns ``(descriptors, reliability,
repeatability)``:

- descriptors: ``(B, D, H / s, W / s)`` float32, unit L2 norm along dim 1, where
  ``s = model.descriptor_stride`` (1 for ``r2d2``, 8 for ``fast``). Sample them at
  pixel coordinates with :func:`fundusfeat.features.keypoints.sample_descriptors`, which
  handles any stride (pixel-centre convention, ``align_corners=False``).
- reliability: ``(B, 1, H, W)`` float32 in [0, 1].
- repeatability: ``(B, 1, H, W)`` float32 in [0, 1].

The same forward is used for training and for inference.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def _conv_bn(
    cin: int,
    cout: int,
    k: int = 3,
    dilation: int = 1,
    stride: int = 1,
    relu: bool = True,
    bn: bool = True,
) -> nn.Sequential:
    """Conv (same padding for odd k, or exact 'same' size for even k and even dilation)."""
    pad = ((k - 1) * dilation) // 2
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, bias=not bn)
    ]
    if bn:
        layers.append(nn.BatchNorm2d(cout, affine=False))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


INFERENCE_GRAPH = 3
"""Version of the graph :func:`fold_for_inference` builds (3: the two-class heads as a
logit difference and a sigmoid, the stem's padding traced for any input size);
converted networks cached on disk are keyed by it."""

SIGMOID_CHUNK = 32768
"""Elements per ``torch.sigmoid`` call in :func:`stable_sigmoid`: ATen's grain size, so
each call runs on one thread."""


def stable_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``torch.sigmoid(x)``, bitwise the same at any torch thread count.

    ATen splits an elementwise op between threads at element counts that depend on the
    thread count, and each thread's last few elements take the scalar path, whose
    ``exp`` can differ from the vector path's in the last bit. Here a large ``x`` is
    done in fixed chunks of :data:`SIGMOID_CHUNK` elements, none above ATen's grain
    size and so on one thread, the same at any thread count. Under autograd or tracing
    (training, export) it is ``torch.sigmoid``.
    """
    if torch.is_grad_enabled() or torch.jit.is_tracing() or x.numel() <= SIGMOID_CHUNK:
        return torch.sigmoid(x)
    flat = x.contiguous().view(-1)
    out = torch.empty_like(flat)
    for start in range(0, flat.numel(), SIGMOID_CHUNK):
        torch.sigmoid(flat[start : start + SIGMOID_CHUNK], out=out[start : start + SIGMOID_CHUNK])
    return out.view(x.shape)


def _two_class_head(x2: torch.Tensor, conv: nn.Module) -> torch.Tensor:
    """Class 1's probability of a two-class 1x1 head on ``x2``, shape (B, 1, H, W).

    ``conv`` gives the two classes' logits (softmax over them) or, folded
    (:func:`fold_for_inference`), their difference ``l1 - l0`` alone: the same
    probability as ``sigmoid(l1 - l0)``, without a softmax over a channels-last map.
    """
    logits = conv(x2)
    if logits.shape[1] == 1:
        return stable_sigmoid(logits)
    return F.softmax(logits, dim=1)[:, 1:2]


def _shuffled_two_class(logits: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Class 1's probability from half-resolution logits ``(B, 8, h2, w2)`` (2 classes x
    (2 x 2) pixels, pixel-shuffle order), or from their differences ``(B, 4, h2, w2)``
    (class 1 - class 0 per pixel, a folded head: :func:`fold_for_inference`), at full
    resolution ``(B, 1, h, w)``.

    The probability is taken before the pixel shuffle, on less data: the same values as
    shuffling first (the shuffle only moves elements).
    """
    b, c, h2, w2 = logits.shape
    if c == 4:
        prob = stable_sigmoid(logits)
    else:
        prob = F.softmax(logits.reshape(b, 2, 4, h2, w2), dim=1)[:, 1]  # (B, 4, h2, w2)
    return F.pixel_shuffle(prob, 2)[:, :, :h, :w]


def _he_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class R2D2Net(nn.Module):
    """The paper's network (R2D2 Quad-L2-Net), output at input resolution.

    Body: 3x3 convs 32-32-64-64-128-128 (BatchNorm without affine + ReLU), with the
    dilation doubling after the third and fifth conv where L2-Net would stride; then
    three 2x2 convs of 128 channels (dilations 4, 8, 16), the last with BatchNorm and
    no ReLU. Heads: reliability and repeatability are each a 2-channel 1x1 conv on
    the squared features followed by a softmax; descriptors are the L2-normalised
    features.
    """

    descriptor_stride = 1
    name = "r2d2"

    def __init__(self, dim: int = 128) -> None:
        super().__init__()
        spec = [  # (cin, cout, kernel, dilation, relu)
            (3, 32, 3, 1, True),
            (32, 32, 3, 1, True),
            (32, 64, 3, 1, True),
            (64, 64, 3, 2, True),
            (64, 128, 3, 2, True),
            (128, 128, 3, 4, True),
            (128, 128, 2, 4, True),
            (128, 128, 2, 8, True),
            (128, dim, 2, 16, False),
        ]
        self.body = nn.Sequential(*[_conv_bn(a, b, k, d, relu=r) for a, b, k, d, r in spec])
        self.dim = dim
        self.clf = nn.Conv2d(dim, 2, 1)  # reliability
        self.sal = nn.Conv2d(dim, 2, 1)  # repeatability
        _he_init(self)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _check_images(images)
        x = self.body(images)
        x2 = x * x
        return F.normalize(x, dim=1), _two_class_head(x2, self.clf), _two_class_head(x2, self.sal)


class _FastEncoder(nn.Module):
    """The encoder both fast networks share (same parameter names and shapes).

    Channels 8, 16, 32, ``dim`` at strides 1, 2, 4, 8 and the reliability head at 1/8
    (``clf``). ``blur2``/``blur4``/``blur8`` run before the strided convs (identity here;
    :class:`FastNet` low-passes).
    """

    descriptor_stride = 8

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.stem = _conv_bn(3, 8)  # 1/1
        self.enc2 = nn.Sequential(_conv_bn(8, 16, stride=2), _conv_bn(16, 16))  # 1/2
        self.enc4 = nn.Sequential(_conv_bn(16, 32, stride=2), _conv_bn(32, 32))  # 1/4
        self.enc8 = nn.Sequential(
            _conv_bn(32, 64, stride=2),
            _conv_bn(64, 64),
            _conv_bn(64, 128),
            _conv_bn(128, 128, dilation=2),
            _conv_bn(128, dim, relu=False),
        )  # 1/8
        self.clf = nn.Conv2d(dim, 2, 1)  # reliability, at 1/8
        self.blur2: nn.Module = nn.Identity()
        self.blur4: nn.Module = nn.Identity()
        self.blur8: nn.Module = nn.Identity()

    def encode(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(f1, f2, f4, x, rel)``: the features at strides 1, 2, 4, 8 and the full-size
        reliability."""
        _check_images(images)
        f1 = self.stem(images)
        f2 = self.enc2(self.blur2(f1))
        f4 = self.enc4(self.blur4(f2))
        x = self.enc8(self.blur8(f4))
        rel = _two_class_head(x * x, self.clf)
        rel = F.interpolate(rel, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return f1, f2, f4, x, rel


class FastNetV1(_FastEncoder):
    """The first CPU-fast variant (``"fast-v1"``): stride-8 descriptors, full-resolution
    repeatability decoded from the coarse features. Its repeatability peaks lock to the
    encoder's stride-4/8 grid (not shift-equivariant); :class:`FastNet` replaces it.

    Encoder (channels at strides 1/2/4/8): 8, 16, 32, 128. The 1/8 features give the
    128-D descriptors and the reliability (upsampled bilinearly to full size). A
    decoder climbs back to full resolution with additive skips (32 -> 16 -> 8
    channels) and predicts the repeatability at every input pixel.
    Input height and width need not be multiples of 8.
    """

    name = "fast-v1"

    def __init__(self, dim: int = 128) -> None:
        super().__init__(dim)
        self.lat8 = _conv_bn(dim, 32, k=1)
        self.dec4 = _conv_bn(32, 16)
        self.dec2 = _conv_bn(16, 8)
        self.dec1 = _conv_bn(8, 8)
        self.sal = nn.Conv2d(8, 2, 1)  # repeatability, at 1/1
        _he_init(self)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f1, f2, f4, x, rel = self.encode(images)
        d4 = self.dec4(_up_to(self.lat8(x), f4) + f4)
        d2 = self.dec2(_up_to(d4, f2) + f2)
        d1 = self.dec1(_up_to(d2, f1) + f1)
        rep = _two_class_head(d1 * d1, self.sal)
        return F.normalize(x, dim=1), rel, rep


class Blur(nn.Module):
    """Fixed binomial low-pass filter, depthwise, same size (edge pixels replicated).

    Placed before every strided convolution of :class:`FastNet`, so that what is
    subsampled is band-limited (Zhang 2019, "Making convolutional networks
    shift-invariant again"): a shift of the input then shifts the features smoothly
    instead of aliasing them onto the stride's grid.

    Args:
        channels: number of channels (each filtered on its own).
        taps: 3 (``[1, 2, 1] / 4``) or 5 (``[1, 4, 6, 4, 1] / 16``) per axis.
    """

    def __init__(self, channels: int, taps: int = 3) -> None:
        super().__init__()
        rows = {3: [1.0, 2.0, 1.0], 5: [1.0, 4.0, 6.0, 4.0, 1.0]}
        if taps not in rows:
            raise ValueError(f"taps must be 3 or 5, got {taps}")
        k = torch.tensor(rows[taps])
        k2 = (k[:, None] * k[None, :]) / k.sum() ** 2
        self.register_buffer("kernel", k2.expand(channels, 1, taps, taps).clone(), persistent=False)
        self.channels, self.pad = channels, taps // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = replicate_pad(x, (self.pad,) * 4)
        return F.conv2d(x, self.kernel.to(x.dtype), groups=self.channels)


def _padded_empty(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """An uninitialised ``(B, C, H + top + bottom, W + left + right)`` tensor in ``x``'s
    memory format (channels-last or contiguous) with ``x`` copied into its interior."""
    left, right, top, bottom = pad
    n, c, h, w = x.shape
    last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    out = torch.empty(
        (n, c, h + top + bottom, w + left + right),
        dtype=x.dtype,
        device=x.device,
        memory_format=torch.channels_last if last else torch.contiguous_format,
    )
    out[:, :, top : top + h, left : left + w] = x
    return out


def replicate_pad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """``F.pad(x, pad, mode="replicate")`` of a ``(B, C, H, W)`` tensor, bitwise the same.

    ``pad = (left, right, top, bottom)``. In inference the result is written into one
    tensor of the input's memory format by slice copies, 3-7x faster than ``F.pad`` on
    a channels-last input (0.35 against 1.18 ms for 16 x 417 x 499 on 2 threads); under
    autograd or tracing (export, OpenVINO conversion) it is ``F.pad`` itself.
    """
    if torch.is_grad_enabled() or torch.jit.is_tracing():
        return F.pad(x, pad, mode="replicate")
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    out = _padded_empty(x, pad)
    if top:
        out[:, :, :top, left : left + w] = x[:, :, :1]
    if bottom:
        out[:, :, top + h :, left : left + w] = x[:, :, -1:]
    if left:
        out[:, :, :, :left] = out[:, :, :, left : left + 1]
    if right:
        out[:, :, :, left + w :] = out[:, :, :, left + w - 1 : left + w]
    return out


def zero_pad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """``F.pad(x, pad)`` (zeros) of a ``(B, C, H, W)`` tensor in the input's memory format
    (``pad = (left, right, top, bottom)``): the interior copied and the border strips
    zeroed, one pass over the data."""
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    out = _padded_empty(x, pad)
    out[:, :, :top] = 0
    out[:, :, top + h :] = 0
    out[:, :, top : top + h, :left] = 0
    out[:, :, top : top + h, left + w :] = 0
    return out


PREPAD_DILATION = 3
"""Dilation from which :class:`InferenceConv` writes a convolution's padding out."""


def _fused_relu_available() -> bool:
    """Whether torch has oneDNN's convolution with a fused ReLU
    (``torch.ops.mkldnn._convolution_pointwise``, what ``torch.compile`` calls on the
    CPU)."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(
            torch.ops.mkldnn, "_convolution_pointwise"
        )
    except (AttributeError, RuntimeError):
        return False


_FUSED_RELU = _fused_relu_available()


class InferenceConv(nn.Module):
    """A zero-padded ``Conv2d`` (and the ReLU after it) as the CPU runs it fastest, the
    same function.

    - **The ReLU in the convolution**: oneDNN's convolution with a ReLU post-op
      (``torch.ops.mkldnn._convolution_pointwise``), without a pass over the output:
      13.1 against 14.0 ms for a 4 -> 4 channel 3x3 conv at 833 x 998 px on one thread
      of an AMD EPYC; the default network's forward 0.94x. Bitwise the same values as
      the convolution and then ``relu_`` wherever torch's own convolution uses oneDNN
      too (on inputs over 20 480 elements; smaller ones it convolves itself).
    - **Wide dilations padded first**: oneDNN handles a large implicit padding slowly; a
      conv with a dilation of :data:`PREPAD_DILATION` or more convolves the zero-padded
      input with ``padding=0`` (the 4 -> 4 channel dilation-4 conv at 833 x 998 px:
      19-22 against 15-17 ms on one thread, 11.5 against 9.1 ms on two; dilations 1
      and 2 gain nothing). Its summation order differs, so its results move in the last
      bits (bitwise the same at any thread count, like the implicit padding).

    Under autograd, tracing (export, OpenVINO conversion), on another device or another
    dtype than float32 it is ``conv`` (then ``relu``) itself.

    Args:
        conv: a ``Conv2d`` with zero padding (``padding_mode="zeros"``) given as numbers.
        relu: whether a ReLU follows the convolution.
    """

    def __init__(self, conv: nn.Conv2d, relu: bool = False) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros":
            raise ValueError("conv must be a Conv2d with zero padding")
        if isinstance(conv.padding, str):
            raise ValueError("conv's padding must be given as numbers")
        self.conv, self.relu = conv, relu
        self.prepad = _pads_first(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if (
            torch.is_grad_enabled()
            or torch.jit.is_tracing()
            or x.device.type != "cpu"
            or x.dtype != torch.float32
        ):
            y = c(x)
            return F.relu(y) if self.relu else y
        padding = c.padding
        if self.prepad:
            ph, pw = padding
            x, padding = zero_pad(x, (pw, pw, ph, ph)), (0, 0)
        if self.relu and _FUSED_RELU:
            return torch.ops.mkldnn._convolution_pointwise(
                x, c.weight, c.bias, padding, c.stride, c.dilation, c.groups, "relu", [None], ""
            )
        y = F.conv2d(x, c.weight, c.bias, c.stride, padding, c.dilation, c.groups)
        return y.relu_() if self.relu else y


class FastNet(_FastEncoder):
    """CPU-fast, shift-equivariant network: stride-8 descriptors, stride-1 keypoints.

    Encoder (channels at strides 1/2/4/8): 8, 16, 32, 128, with a binomial low-pass
    (:class:`Blur`, 3 taps at full resolution, 5 below) before each strided conv. The 1/8
    features give the 128-D descriptors and the reliability (upsampled bilinearly to
    full size). The repeatability comes from stride-1 layers only: the stem and three 3x3
    convs (dilations 2, 4, 1; receptive field 17 px), so shifting the image by whole
    pixels shifts it exactly and the keypoints (its local maxima) move with the image,
    never locking to the encoder's grid. The coarse features take part through the
    reliability, which selects and ranks the keypoints but does not place them.
    Input height and width need not be multiples of 8.
    """

    name = "fast"

    def __init__(self, dim: int = 128) -> None:
        super().__init__(dim)
        self.blur2, self.blur4, self.blur8 = Blur(8, 3), Blur(16, 5), Blur(32, 5)
        self.full = _conv_bn(8, 8, dilation=2)  # stride-1 repeatability path, at 1/1
        self.full2 = _conv_bn(8, 8, dilation=4)
        self.dec1 = _conv_bn(8, 8)
        self.sal = nn.Conv2d(8, 2, 1)  # repeatability, at 1/1
        _he_init(self)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f1, _, _, x, rel = self.encode(images)
        d1 = self.dec1(self.full2(self.full(f1)))
        rep = _two_class_head(d1 * d1, self.sal)
        return F.normalize(x, dim=1), rel, rep


class _LeanEncoder(nn.Module):
    """The encoder the lean networks share (same parameter names and shapes): a 4x4 stem
    with stride 2 and the descriptors and reliability at 1/8.

    Stem: a 4x4 conv with stride 2 and padding 1 (3 -> 16 channels): half-resolution
    cell ``i`` covers input pixels ``2i - 1 .. 2i + 2`` (an odd side is first
    replicate-padded by one pixel). Then a binomial low-pass (:class:`Blur`) before each
    strided conv, 32 channels at 1/4, 64 at 1/8 and a 1x1 conv to ``dim``; the
    reliability is a two-class 1x1 head at 1/8 upsampled bilinearly to full size. The
    same stride-8 contract as :class:`FastNet`.

    Args:
        dim: descriptor size.
        separable: the ``lean-dw`` encoder (:func:`_separable_encoder`: the 3x3 convs
            that keep the resolution depthwise-separable) instead of dense 3x3 convs
            (the parameter names are the same, some shapes differ).
    """

    descriptor_stride = 8

    def __init__(self, dim: int, separable: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.stem = _conv_bn(3, 16, k=4, stride=2)  # 1/2
        self.blur4, self.blur8 = Blur(16, 3), Blur(32, 3)
        if separable:
            self.enc4, self.enc8 = _separable_encoder(dim)
        else:
            self.enc4 = nn.Sequential(_conv_bn(16, 32, stride=2), _conv_bn(32, 32))  # 1/4
            self.enc8 = nn.Sequential(
                _conv_bn(32, 64, stride=2),
                _conv_bn(64, 64),
                _conv_bn(64, 64, dilation=2),
                _conv_bn(64, dim, k=1, relu=False),
            )  # 1/8
        self.clf = nn.Conv2d(dim, 2, 1)  # reliability, at 1/8

    def half(self, images: torch.Tensor) -> torch.Tensor:
        """The stem's ``(B, 16, ceil(H / 2), ceil(W / 2))`` features."""
        _check_images(images)
        h, w = images.shape[-2:]
        # padding copies the image even when it adds nothing; a traced graph (export,
        # OpenVINO) keeps it, the padding then following the input's size
        if h % 2 or w % 2 or torch.jit.is_tracing():
            images = replicate_pad(images, (0, w % 2, 0, h % 2))
        return self.stem(images)

    def encode(self, f2: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(descriptors, reliability)``: unit ``(B, dim, H/8, W/8)`` and ``(B, 1, H, W)``
        (``size = (H, W)``) from the stem's features."""
        x = self.enc8(self.blur8(self.enc4(self.blur4(f2))))
        rel = _two_class_head(x * x, self.clf)
        rel = F.interpolate(rel, size=size, mode="bilinear", align_corners=False)
        return F.normalize(x, dim=1), rel


class LeanNet(_LeanEncoder):
    """A leaner CPU network (``"lean"``, issue 31): nothing at full resolution but the
    input and the final pixel shuffle, a thin stride-8 encoder.

    Repeatability: two 3x3 convs at 1/2 (dilations 1, 2) on the stem's features
    (:class:`_LeanEncoder`), then a 1x1 conv to 2 x 4 channels, pixel-shuffled to full
    resolution (each half-resolution cell predicts its 2 x 2 pixels) and a softmax over
    the two classes: a stride-1 heatmap from stride-2 work, not exactly
    shift-equivariant: a whole-pixel shift changes the stem's phase (0.80-0.87 of the
    keypoints found again at FOV 768 px, :class:`FastNet` 0.89-0.92 on the same
    resampled images; docs/benchmarks.md; :class:`LeanNetS1` has stride-1 keypoints).
    Descriptors and reliability: :class:`_LeanEncoder`. About 1.7x faster than
    :class:`FastNet` on the CPU (``python examples/network_speed.py``, 2 threads of an
    AMD EPYC: 133 ms against 229 ms at 1011 x 1011 px, 46 against 78 ms at 640 x 640).
    Trained by distillation from :class:`FastNet` (``training/configs/lean.toml``).
    Input height and width need not be multiples of 8.
    """

    name = "lean"

    def __init__(self, dim: int = 128, rep_channels: int = 16, separable: bool = False) -> None:
        super().__init__(dim, separable)
        c = rep_channels
        self.rep2 = nn.Sequential(_conv_bn(16, c), _conv_bn(c, c, dilation=2))  # 1/2
        self.sal = nn.Conv2d(c, 8, 1)  # 2 classes x (2 x 2) pixels, pixel-shuffled
        _he_init(self)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = images.shape[-2:]
        f2 = self.half(images)
        r = self.rep2(f2)
        rep = _shuffled_two_class(self.sal(r * r), h, w)
        desc, rel = self.encode(f2, (h, w))
        return desc, rel, rep


class LeanNetS1(_LeanEncoder):
    """``lean`` with stride-1 keypoints (``"lean-s1"``, issue 31; a shipped named model).

    :class:`LeanNet`'s encoder (descriptors and reliability) and, in place of its
    half-resolution repeatability, a thin stride-1 branch on the image: four 3x3 convs of
    ``key_channels`` channels (dilations 1, 2, 4, 1; receptive field 17 px) and a
    two-class 1x1 head, so a whole-pixel shift of the image shifts the repeatability
    exactly and the keypoints move with it (like :class:`FastNet`'s): 0.89-0.92 of the
    keypoints found again after whole-pixel shifts at FOV 768 px, :class:`LeanNet`
    0.80-0.87 (docs/benchmarks.md). Trained by distilling :class:`FastNet`'s
    repeatability into the branch alone, the encoder copied from the shipped ``lean``
    weights and frozen (``training/configs/lean_s1.toml``). Input height and width need
    not be multiples of 8.

    Args:
        dim: descriptor size.
        key_channels: width of the stride-1 keypoint branch.
    """

    name = "lean-s1"

    def __init__(self, dim: int = 128, key_channels: int = 4, separable: bool = False) -> None:
        super().__init__(dim, separable)
        k = key_channels
        self.key = nn.Sequential(
            _conv_bn(3, k), _conv_bn(k, k, dilation=2), _conv_bn(k, k, dilation=4), _conv_bn(k, k)
        )  # 1/1
        self.sal = nn.Conv2d(k, 2, 1)  # repeatability, at 1/1
        _he_init(self)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        desc, rel = self.encode(self.half(images), images.shape[-2:])
        k = self.key(images)
        return desc, rel, _two_class_head(k * k, self.sal)


def _separable(c: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 conv (``dilation``) + BatchNorm, pointwise 1x1 conv + BatchNorm, ReLU;
    ``c`` channels in and out, the same size."""
    return nn.Sequential(
        nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, groups=c, bias=False),
        nn.BatchNorm2d(c, affine=False),
        nn.Conv2d(c, c, 1, bias=False),
        nn.BatchNorm2d(c, affine=False),
        nn.ReLU(inplace=True),
    )


def _separable_encoder(dim: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``(enc4, enc8)`` of the ``lean-dw`` networks: :class:`_LeanEncoder`'s strided 3x3
    convs (16 -> 32 at 1/4, 32 -> 64 at 1/8) with :func:`_separable` convs in place of
    its resolution-keeping 3x3 convs (one at 1/4, two at 1/8, the second dilated by 2),
    then the 1x1 conv to ``dim``."""
    enc4 = nn.Sequential(_conv_bn(16, 32, stride=2), _separable(32))  # 1/4
    enc8 = nn.Sequential(
        _conv_bn(32, 64, stride=2),
        _separable(64),
        _separable(64, dilation=2),
        _conv_bn(64, dim, k=1, relu=False),
    )  # 1/8
    return enc4, enc8


class LeanNetDW(LeanNet):
    """A lighter ``lean`` for the CPU (``"lean-dw"``, issue 31; a shipped named model).

    :class:`LeanNet`'s layout and forward with cheaper layers: the same 4x4 stride-2 stem
    (3 -> 16) and strided 3x3 convs (16 -> 32 at 1/4, 32 -> 64 at 1/8, each after a
    :class:`Blur`), but the 3x3 convs that keep the resolution are depthwise-separable
    (:func:`_separable`: one at 1/4, two at 1/8, the second dilated by 2), and the
    half-resolution repeatability has 8 channels (two 3x3 convs, dilations 1 and 2, a
    1x1 conv to 2 classes x (2 x 2) pixels, pixel-shuffled to full resolution, softmax).
    Descriptors (128-D, unit) and reliability at 1/8 as for :class:`LeanNet` (the same
    stride-8 contract). 44 714 parameters (``lean``: 119 946); the untrained forward
    takes about 0.55x ``lean``'s at 833 x 997 px on 2 threads of an AMD EPYC. Trained by
    distillation from :class:`FastNet` (``training/configs/lean_dw.toml``), the tensors
    whose names and shapes match copied from the shipped ``lean`` weights first. Input
    height and width need not be multiples of 8.
    """

    name = "lean-dw"

    def __init__(self, dim: int = 128) -> None:
        super().__init__(dim, rep_channels=8, separable=True)


class LeanNetDWS1(LeanNetS1):
    """``lean-dw``'s encoder with ``lean-s1``'s stride-1 keypoints (``"lean-dw-s1"``,
    issue 31).

    Descriptors (128-D, unit, stride 8) and reliability from :class:`LeanNetDW`'s
    encoder (:func:`_separable_encoder` after the 4x4 stride-2 stem); the repeatability
    from :class:`LeanNetS1`'s branch on the image (four 3x3 convs of ``key_channels``
    channels, dilations 1, 2, 4, 1, and a two-class 1x1 head), so a whole-pixel shift of
    the image shifts the keypoints with it. The branch does not see the encoder: each
    part is distilled from :class:`FastNet` on its own. Weights: the two shipped named
    models' tensors (``training/configs/lean_dw_s1.toml``: ``model.init_from`` both, the
    encoder frozen, the branch trained further). Input height and width need not be
    multiples of 8.

    Args:
        dim: descriptor size.
        key_channels: width of the stride-1 keypoint branch.
    """

    name = "lean-dw-s1"

    def __init__(self, dim: int = 128, key_channels: int = 4) -> None:
        super().__init__(dim, key_channels, separable=True)


def _up_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class StablePointwise(nn.Module):
    """A 1x1 convolution whose result is bitwise the same at any thread count.

    oneDNN's 1x1 convolutions with few output channels split their reduction over the
    input channels by thread count, which moves the heads' outputs by ~1e-6 and flips
    near-threshold keypoints. Here the same function is a GEMM of the channels-last
    pixels ``(B*H*W, C)`` with the ``(C, O)`` weights (MKL partitions the pixel rows
    between threads and reduces each row's C <= 128 channels in one piece: measured
    bitwise equal at 1 to 4 threads, tests/test_network.py), about 10x faster than
    summing channel by channel. Under autograd or tracing (export, OpenVINO conversion)
    it is the plain sum over channels in a fixed order, ``b + w[0] x[0] + w[1] x[1] ...``,
    elementwise operations only.

    Args:
        conv: a ``Conv2d`` with a 1x1 kernel, stride 1, no padding, ``groups=1``.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.stride != (1, 1):
            raise ValueError("conv must be a 1x1, stride-1, groups=1 Conv2d")
        w = conv.weight.detach()[:, :, 0, 0].clone()  # (O, C)
        b = conv.bias.detach().clone() if conv.bias is not None else w.new_zeros(w.shape[0])
        self.register_buffer("weight", w.t().contiguous())  # (C, O)
        self.register_buffer("bias", b)  # (O,)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight.to(x.dtype), self.bias.to(x.dtype)
        if torch.is_grad_enabled() or torch.jit.is_tracing():  # export, conversion
            out = b.view(1, -1, 1, 1) + w[0].view(1, -1, 1, 1) * x[:, 0:1]
            for c in range(1, self.in_channels):
                out = out + w[c].view(1, -1, 1, 1) * x[:, c : c + 1]
            return out
        n, c, h, wd = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(n * h * wd, c)  # a view when channels-last
        return torch.addmm(b, rows, w).view(n, h, wd, -1).permute(0, 3, 1, 2)


def class_difference(conv: nn.Conv2d) -> nn.Conv2d:
    """The 1x1 conv giving ``l1 - l0`` of a two-class head whose output channels are
    class 0's then class 1's (``2 k`` channels -> ``k``): weights and bias subtracted,
    so ``sigmoid`` of its output is the softmax's class-1 probability."""
    k = conv.out_channels // 2
    if conv.out_channels != 2 * k or conv.kernel_size != (1, 1) or conv.groups != 1:
        raise ValueError("conv must be a 1x1, groups=1 Conv2d with an even channel count")
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else w.new_zeros(2 * k)
    out = nn.Conv2d(conv.in_channels, k, 1).to(w.device, w.dtype)
    with torch.no_grad():
        out.weight.copy_(w[k:] - w[:k])
        out.bias.copy_(b[k:] - b[:k])
    return out


def fold_for_inference(net: nn.Module) -> nn.Module:
    """An inference copy of ``net`` with every BatchNorm folded into the conv before it
    and the two-class heads (``clf``, ``sal``) as :class:`StablePointwise` of their
    logit difference (:func:`class_difference`).

    In eval mode ``BN(conv(x)) = conv'(x)`` with ``w' = w / sqrt(var + eps)`` and
    ``b' = (b - mean) / sqrt(var + eps)`` (``torch.nn.utils.fusion``), so the forward
    is the same function (up to float rounding) with one pass over each feature map
    fewer: about 30 % faster on the CPU. A two-class softmax is the sigmoid of the
    logit difference, so each head computes that one map (:func:`stable_sigmoid`) in
    place of two logits and a softmax: the default network's forward 48.4 -> 46.9 ms at
    834 x 998 px (2 threads of an AMD EPYC, alternating in one process). The
    heads' :class:`StablePointwise` and :func:`stable_sigmoid` make the outputs
    independent of torch's thread count (the other convolutions already are, measured
    with oneDNN). Each convolution followed by a ReLU, and each with a dilation of
    :data:`PREPAD_DILATION` or more, becomes an :class:`InferenceConv` (the ReLU in the
    convolution, the padding of wide dilations written out). The copy is in eval mode;
    ``net`` is untouched.
    """
    folded = copy.deepcopy(net).eval()
    for head in ("clf", "sal"):
        conv = getattr(folded, head, None)
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.groups == 1:
            setattr(folded, head, StablePointwise(class_difference(conv)))
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(conv, bn)
                module[i + 1] = nn.Identity()
    for module in list(folded.modules()):
        if isinstance(module, nn.Sequential):
            _fuse_relus(module)
        for name, child in list(module.named_children()):
            if _plain_conv(child) and _pads_first(child):
                setattr(module, name, InferenceConv(child))
    return folded


def _plain_conv(module: nn.Module) -> bool:
    """Whether ``module`` is a plain zero-padded ``Conv2d`` (what :class:`InferenceConv` wraps)."""
    return (
        type(module) is nn.Conv2d
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def _pads_first(conv: nn.Conv2d) -> bool:
    """Whether :class:`InferenceConv` writes ``conv``'s padding out: padded, with a
    dilation of :data:`PREPAD_DILATION` or more."""
    return max(conv.padding) > 0 and max(conv.dilation) >= PREPAD_DILATION


def _fuse_relus(seq: nn.Sequential) -> None:
    """Each conv of ``seq`` followed by a ReLU (Identity modules between them, as the
    folded BatchNorms leave) becomes ``InferenceConv(conv, relu=True)``, the ReLU an
    Identity."""
    last = None
    for i, module in enumerate(seq):
        if isinstance(module, nn.ReLU) and last is not None:
            seq[last] = InferenceConv(seq[last], relu=True)
            seq[i] = nn.Identity()
            last = None
        elif not isinstance(module, nn.Identity):
            last = i if _plain_conv(module) else None


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got {images.dtype}")
