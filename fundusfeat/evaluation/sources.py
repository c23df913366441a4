"""The images a benchmark is built from: what the user names, else the embedded photograph.

The held-out images every reported number comes from are eight IDRiD photographs
(``training/splits/val.txt``, CC BY 4.0) and scikit-image's retina (CC0), in the project's
``../shared/data`` folder, which a clone does not have. Without them the benchmark
commands and examples run on the package's own demo photograph (numbers not comparable
with docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from fundusfeat.io.demo import photograph_path
from fundusfeat.io.images import expand_image_args

logger = logging.getLogger(__name__)

MISSING_IMAGES_HINT = (
    "the held-out benchmark images (IDRiD, ../shared/data) are not part of a clone: give "
    "images of your own, or none for the embedded demo photograph (docs/benchmarks.md)"
)


def benchmark_images(args: Sequence[str | Path]) -> list[Path]:
    """The images of an image-set argument: files, folders and ``.txt`` lists
    (:func:`~fundusfeat.io.images.expand_image_args`); none given -> the embedded demo
    photograph (logged).

    Raises:
        FileNotFoundError: a named or listed image is missing (the message says what to
            pass instead).
        ValueError: the arguments name no image.
    """
    if not args:
        path = photograph_path()
        logger.warning("no images given: using the embedded demo photograph %s", path.name)
        return [path]
    try:
        return expand_image_args(args)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc} ({MISSING_IMAGES_HINT})") from exc
