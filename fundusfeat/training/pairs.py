"""Training pairs with known correspondence, cut from single fundus images.

Each image is brought once to the working scale (FOV diameter ``target_diameter``).
A pair is then made as in the paper: a random global rescale (``scale_range``),
a random projective warp of the rescaled image
(:func:`fundusfeat.training.warps.sample_homography`),
one crop in each image (at least ``min_fov_fraction`` of crop 1 inside the FOV; at
least ``min_overlap`` of crop 1 mapped inside crop 2's FOV), and an independent
photometric change of each crop (:func:`fundusfeat.training.warps.photometric_change`).

The dense correspondence ("flow") of a pair is exact: it is the homography
``H`` (3x3, crop-1 pixel -> crop-2 pixel, pixel-centre convention), with which
:func:`fundusfeat.training.losses.warp_to_first` resamples image-2 maps in image 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from fundusfeat.features.fov import estimate_fov
from fundusfeat.features.scale import working_scale
from fundusfeat.geometry.homography import transform_points, translation, warp_image
from fundusfeat.io.arrays import points_in_mask, resize_image
from fundusfeat.io.images import read_image
from fundusfeat.training.warps import PhotoRange, WarpRange, photometric_change, sample_homography

_MAX_TRIES = 50


@dataclass(frozen=True)
class TrainImage:
    """One image at the working scale: (H, W, 3) uint8 BGR and its (H, W) bool FOV."""

    image: np.ndarray
    fov: np.ndarray
    name: str


@dataclass(frozen=True)
class PairBatch:
    """A batch of B training pairs.

    Attributes:
        image1, image2: (B, 3, S, S) float32 RGB in [0, 1].
        valid1, valid2: (B, 1, S, S) float32, 1 inside the field of view.
        H: (B, 3, 3) float32 homographies mapping crop-1 pixels to crop-2 pixels.
    """

    image1: torch.Tensor
    image2: torch.Tensor
    valid1: torch.Tensor
    valid2: torch.Tensor
    H: torch.Tensor

    def to(self, device: torch.device | str) -> PairBatch:
        """The same batch on ``device``."""
        return PairBatch(*(t.to(device, non_blocking=True) for t in self.__dict__.values()))


def load_train_image(path: str | Path, target_diameter: float) -> TrainImage:
    """Read an image, find its FOV and bring both to the working scale."""
    img = read_image(path)
    fov = estimate_fov(img)
    scale = working_scale(fov.diameter, target_diameter)
    small, (sx, sy) = resize_image(img, scale)
    mask = cv2.resize(
        fov.mask.astype(np.uint8), small.shape[1::-1], interpolation=cv2.INTER_NEAREST
    ).astype(bool)
    return TrainImage(image=small, fov=mask, name=Path(path).name)


def _crop(image: np.ndarray, H: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    return warp_image(image, H, (size, size), interpolation)


def _grid(size: int, step: int = 8) -> np.ndarray:
    """(N, 2) sparse grid of crop pixels (x, y)."""
    g = np.arange(step // 2, size, step, dtype=np.float64)
    return np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)


def _inside_fraction(fov: np.ndarray, H: np.ndarray, size: int) -> float:
    """Fraction of a sparse grid of crop pixels (through H, crop -> image) inside ``fov``."""
    return float(points_in_mask(fov, transform_points(H, _grid(size))).mean())


def _overlap_fraction(fov: np.ndarray, from1: np.ndarray, H: np.ndarray, size: int) -> float:
    """Fraction of crop-1 grid pixels inside the FOV whose correspondent lies in crop 2."""
    pts = _grid(size)
    q = transform_points(H, pts)
    in_crop2 = np.isfinite(q).all(1) & (q >= -0.5).all(1) & (q < size - 0.5).all(1)
    return float((in_crop2 & points_in_mask(fov, transform_points(from1, pts))).mean())


class PairSampler:
    """Draws training pairs from a list of images (seeded, reproducible).

    Args:
        images: the images at the working scale.
        crop: side of the crops in pixels.
        scale_range: (min, max) global rescale, log-uniform.
        min_fov_fraction: minimum fraction of crop 1 inside its FOV.
        min_overlap: minimum fraction of crop 1 that lands inside crop 2's FOV.
        warp: the ranges of the random homography.
        photo: the ranges of the photometric change (applied to each crop).
        seed: root seed; the sampler owns its generator.
    """

    def __init__(
        self,
        images: Sequence[TrainImage],
        *,
        crop: int,
        scale_range: tuple[float, float],
        min_fov_fraction: float,
        min_overlap: float,
        warp: WarpRange,
        photo: PhotoRange,
        seed: int,
    ) -> None:
        if not images:
            raise ValueError("images must not be empty")
        self.images = list(images)
        self.crop = crop
        self.scale_range = scale_range
        self.min_fov_fraction = min_fov_fraction
        self.min_overlap = min_overlap
        self.warp = warp
        self.photo = photo
        self.rng = np.random.default_rng(seed)

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One pair: (crop1, crop2) float32 BGR [0, 1], (fov1, fov2) bool, H (3, 3) float64."""
        rng = self.rng
        item = self.images[int(rng.integers(len(self.images)))]
        lo, hi = self.scale_range
        g = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        img, (sx, sy) = resize_image(item.image, g)
        h, w = img.shape[:2]
        fov = cv2.resize(item.fov.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        S = self.crop
        warp = sample_homography(rng, w, h, self.warp)

        def image_to_crop2(centre: np.ndarray) -> np.ndarray:
            """Image pixel -> pixel of the warped crop centred on ``centre``."""
            return translation(-(centre[0] - S / 2), -(centre[1] - S / 2)) @ warp

        for _ in range(_MAX_TRIES):
            o1 = rng.uniform(0, max(w - S, 0) + 1e-9), rng.uniform(0, max(h - S, 0) + 1e-9)
            from1 = translation(*o1)  # crop-1 pixel -> image pixel
            if _inside_fraction(fov, from1, S) < self.min_fov_fraction:
                continue
            c2 = transform_points(warp, [[o1[0] + S / 2, o1[1] + S / 2]])[0]
            to2 = image_to_crop2(c2 + rng.uniform(-S / 4, S / 4, size=2))
            H = to2 @ from1
            if _overlap_fraction(fov, from1, H, S) >= self.min_overlap:
                break
        else:  # no acceptable crop: fall back to the image centre, no offset
            from1 = translation((w - S) / 2, (h - S) / 2)
            to2 = image_to_crop2(transform_points(warp, [[w / 2, h / 2]])[0])
            H = to2 @ from1
        to1 = np.linalg.inv(from1)
        crop1 = _crop(img, to1, S, cv2.INTER_LINEAR)
        crop2 = _crop(img, to2, S, cv2.INTER_LINEAR)
        fov1 = _crop(fov.astype(np.uint8), to1, S, cv2.INTER_NEAREST) > 0
        fov2 = _crop(fov.astype(np.uint8), to2, S, cv2.INTER_NEAREST) > 0
        crop1 = photometric_change(crop1, rng, self.photo)
        crop2 = photometric_change(crop2, rng, self.photo)
        return crop1, crop2, fov1, fov2, H / H[2, 2]

    def batch(self, size: int) -> PairBatch:
        """``size`` pairs as tensors on the CPU (see :class:`PairBatch`)."""
        pairs = [self.sample() for _ in range(size)]

        def images(i: int) -> torch.Tensor:
            arr = np.stack([p[i][..., ::-1] for p in pairs])  # BGR -> RGB
            return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()

        def masks(i: int) -> torch.Tensor:
            return torch.from_numpy(np.stack([p[i] for p in pairs])).float()[:, None]

        H = torch.from_numpy(np.stack([p[4] for p in pairs])).float()
        return PairBatch(images(0), images(1), masks(2), masks(3), H)
