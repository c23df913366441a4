"""One image made ready for the network: validated once, its keypoint region found, and
resized to the working scale.

:func:`prepare` is the only place the detector validates an image; everything after it
works on the :class:`Prepared` result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from fundusfeat.features.fov import FieldOfView, estimate_fov_checked
from fundusfeat.features.models import Normalisation
from fundusfeat.features.scale import working_scale
from fundusfeat.features.settings import DetectorConfig
from fundusfeat.features.tensors import tensor_from_checked
from fundusfeat.io.arrays import resize_image, to_unit_float
from fundusfeat.io.validation import MIN_IMAGE_SIDE, validate_image, validate_mask


@dataclass(frozen=True)
class Prepared:
    """One image ready for the network.

    Attributes:
        tensor: ``(1, 3, h, w)`` float32 normalised RGB at the working scale, on the
            detector's device.
        valid: ``(1, 1, h, w)`` bool keypoint region at the working scale.
        factors: the working scale ``(sx, sy)``: input pixel ``x`` is working pixel
            ``(x + 0.5) * sx - 0.5`` (:func:`fundusfeat.features.scale.to_working`).
        region: ``(H, W)`` bool keypoint region at the input scale (FOV and mask).
        fov: the estimated field of view (None when ``config.fov`` is off).
        blank: the image has no intensity variation (it gives no keypoints).
        image: the caller's image in canonical form (``(H, W, 3)`` BGR uint8 or float32,
            :func:`~fundusfeat.io.validation.validate_image`; the caller's array itself
            where it already was).
    """

    tensor: torch.Tensor
    valid: torch.Tensor
    factors: tuple[float, float]
    region: np.ndarray
    fov: FieldOfView | None
    blank: bool
    image: np.ndarray

    @property
    def input_size(self) -> tuple[int, int]:
        """``(width, height)`` of the caller's image."""
        return self.region.shape[1], self.region.shape[0]


def prepare(
    image: Any,
    mask: Any,
    config: DetectorConfig,
    device: torch.device,
    normalisation: Normalisation | None = None,
    image_name: str = "image",
    mask_name: str = "mask",
) -> Prepared:
    """Validate an image (and mask), find its keypoint region, bring it to the working scale.

    The keypoint region is the estimated field of view (``config.fov``) AND the mask.
    The working scale brings the FOV diameter (else ``max(H, W)``) to
    ``config.target_diameter`` (at most ``config.max_upscale`` enlargement, 1 within
    ``config.scale_tolerance``, and never so small that the shorter side falls below
    :data:`~fundusfeat.io.validation.MIN_IMAGE_SIDE` px).

    Args:
        image: the caller's image (see :func:`~fundusfeat.io.validation.validate_image`).
        mask: None or an ``(H, W)`` uint8/bool mask.
        config: the detector settings.
        device: where the tensors go.
        normalisation: the model's input normalisation (None: the ImageNet values).
        image_name, mask_name: argument names for error messages.

    Raises:
        TypeError, ValueError: invalid image or mask (the message names the argument).
    """
    img = validate_image(image, image_name)
    user = validate_mask(mask, img.shape, mask_name)
    h, w = img.shape[:2]
    fov = estimate_fov_checked(img) if config.fov else None
    region = fov.mask.copy() if fov is not None else np.ones((h, w), bool)
    if user is not None:
        region &= user
    scale = 1.0
    if config.target_diameter is not None:
        diameter = fov.diameter if fov is not None else float(max(h, w))
        scale = working_scale(
            diameter, config.target_diameter, config.max_upscale, config.scale_tolerance
        )
        scale = max(scale, MIN_IMAGE_SIDE / min(h, w))
    # resized as float32 in [0, 1] whatever the input type: a uint8, uint16 or float
    # copy of one image gives the same keypoints (a uint8 resize would round)
    work, factors = resize_image(to_unit_float(img), scale)
    norm = normalisation or Normalisation()
    valid = cv2.resize(
        region.astype(np.uint8), work.shape[1::-1], interpolation=cv2.INTER_NEAREST
    ).astype(bool)
    return Prepared(
        tensor=tensor_from_checked([work], device, norm.mean, norm.std),
        valid=torch.from_numpy(valid)[None, None].to(device),
        factors=factors,
        region=region,
        fov=fov,
        blank=bool(img.min() == img.max()),
        image=img,
    )
