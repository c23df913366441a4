"""The montage: fields of one eye placed jointly; bad input refused."""

import cv2
import numpy as np
import pytest

from fundusfeat.evaluation.fields import make_field_set
from fundusfeat.io.demo import load_demo_pair
from fundusfeat.pipeline.montage import montage


def test_fewer_than_two_images_is_refused():
    img, _, _ = load_demo_pair()
    with pytest.raises(ValueError):
        montage([img])


@pytest.mark.slow
def test_cross_fields_agree_through_the_montage():
    img, _, _ = load_demo_pair()
    fields = make_field_set(img, "cross5", seed=1)
    res = montage(fields.images)
    assert all(t is not None for t in res.transforms), res.reasons
    for (i, j), (pi, pj) in fields.pairs.items():
        # field i -> montage -> field j, against the true correspondences
        mapped = res.transforms[j].inverse(res.transforms[i].apply(pi))
        err = float(np.median(np.linalg.norm(mapped - pj, axis=1)))
        assert err < 3.0, (i, j, err)
    assert res.image.dtype == np.uint8 and res.image.ndim == 3
    assert res.mask.shape == res.image.shape[:2]
    assert cv2.countNonZero(res.mask.astype(np.uint8)) > 0
