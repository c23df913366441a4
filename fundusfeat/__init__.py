"""fundusfeat: learned keypoints and descriptors for colour fundus image registration.

R2D2 network (Rivas-Villar et al. 2023) behind an OpenCV Feature2D-style interface::

    import fundusfeat
    det = fundusfeat.R2D2Fundus.create()
    kps, desc = det.detectAndCompute(img, None)
    res = fundusfeat.register(img1, img2)

The package by layer: :mod:`fundusfeat.features` (the detector), :mod:`fundusfeat.geometry`
(transforms, matching, estimation, verification), :mod:`fundusfeat.pipeline` (pairs,
datasets, montages, comparison of visits), :mod:`fundusfeat.io` (images in, figures out),
:mod:`fundusfeat.cli`, :mod:`fundusfeat.evaluation` and :mod:`fundusfeat.training`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fundusfeat._version import __version__

_PUBLIC = {
    "R2D2Fundus": "fundusfeat.features.feature2d",
    "estimate_projective": "fundusfeat.geometry.estimation",
    "FundusMatcher": "fundusfeat.geometry.matching",
    "Transform": "fundusfeat.geometry.transforms",
    "register_dataset": "fundusfeat.pipeline.batch",
    "ChangeParams": "fundusfeat.pipeline.changes",
    "ComparisonResult": "fundusfeat.pipeline.changes",
    "compare": "fundusfeat.pipeline.changes",
    "compare_series": "fundusfeat.pipeline.changes",
    "MontageResult": "fundusfeat.pipeline.montage",
    "montage": "fundusfeat.pipeline.montage",
    "RegistrationResult": "fundusfeat.pipeline.register",
    "register": "fundusfeat.pipeline.register",
    "register_many": "fundusfeat.pipeline.register",
}
"""Each public name and its module, imported on first use (PEP 562): ``import fundusfeat``
and a command that needs one stage do not pay for every stage's imports (torch, scipy)."""


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'fundusfeat' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


if TYPE_CHECKING:  # what static tools see: the same names, imported eagerly
    from fundusfeat.features.feature2d import R2D2Fundus
    from fundusfeat.geometry.estimation import estimate_projective
    from fundusfeat.geometry.matching import FundusMatcher
    from fundusfeat.geometry.transforms import Transform
    from fundusfeat.pipeline.batch import register_dataset
    from fundusfeat.pipeline.changes import (
        ChangeParams,
        ComparisonResult,
        compare,
        compare_series,
    )
    from fundusfeat.pipeline.montage import MontageResult, montage
    from fundusfeat.pipeline.register import RegistrationResult, register, register_many

__all__ = [
    "FundusMatcher",
    "ChangeParams",
    "ComparisonResult",
    "MontageResult",
    "R2D2Fundus",
    "RegistrationResult",
    "Transform",
    "__version__",
    "compare",
    "compare_series",
    "estimate_projective",
    "montage",
    "register",
    "register_dataset",
    "register_many",
]
