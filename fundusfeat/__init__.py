"""fundusfeat: learned keypoints and descriptors for colour fundus image registration.

R2D2 network (Rivas-Villar et al. 2023) behind an OpenCV Feature2D-style interface::

    import fundusfeat
    det = fundusfeat.R2D2Fundus.create()
    kps, desc = det.detectAndCompute(img, None)
"""

from fundusfeat.feature2d import R2D2Fundus
from fundusfeat.geometry import estimate_projective
from fundusfeat.matching import FundusMatcher
from fundusfeat.registration import RegistrationResult, register

__version__ = "0.1.0"

__all__ = [
    "FundusMatcher",
    "R2D2Fundus",
    "RegistrationResult",
    "__version__",
    "estimate_projective",
    "register",
]
