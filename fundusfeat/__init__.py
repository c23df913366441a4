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

from fundusfeat._version import __version__
from fundusfeat.features.feature2d import R2D2Fundus
from fundusfeat.geometry.estimation import estimate_projective
from fundusfeat.geometry.matching import FundusMatcher
from fundusfeat.geometry.transforms import Transform
from fundusfeat.pipeline.batch import register_dataset
from fundusfeat.pipeline.changes import ChangeParams, ComparisonResult, compare, compare_series
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
