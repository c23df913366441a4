"""Fit the verification's confidence (:data:`fundusfeat.geometry.verification.CALIBRATION`) on
training images only.

True pairs come from the synthetic presets (easy, hard, eye, eye-hard) and impossible
pairs from :mod:`fundusfeat.evaluation.impostors`, all made from the *training* split
(never from the held-out images the benchmarks report on). Each pair is registered with
the default detector and no confidence threshold, and its :class:`Evidence` is kept
with a label: 1 when the registration is right (a true pair within
:data:`RIGHT_PX` px mean control-point error, or a rotation impostor rightly
registered), else 0. A logistic regression on the standardised evidence (L2-penalised,
classes weighted equally, ``scipy.optimize.minimize``) gives the weights.

Run it from the repository root (``../shared`` beside it) and paste the printed
``Calibration(...)`` into ``fundusfeat/verification.py``::

    python -m fundusfeat.evaluation.calibration --images training/splits/train.txt
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize

from fundusfeat.evaluation.impostors import ROTATION_TOLERANCE, impostor_pairs
from fundusfeat.evaluation.metrics import pair_error
from fundusfeat.evaluation.presets import preset_pairs
from fundusfeat.evaluation.runner import result_transform
from fundusfeat.geometry.verification import FEATURES, Calibration
from fundusfeat.io.images import expand_image_args

RIGHT_PX = 10.0
"""A true pair's registration counts as right within this mean control-point error."""

SEED = 20261201
"""Seed of the calibration pairs (a stream of their own)."""


def collect(
    register: callable, images: Sequence, true_pairs: int, impostors: int, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Evidence features, labels and pair names of the calibration pairs.

    Args:
        register: ``(img1, img2) -> RegistrationResult`` with no confidence threshold.
        images: training image paths.
        true_pairs: true pairs per synthetic preset.
        impostors: impostor pairs (a seeded sample of all kinds).
        seed: the pairs' seed.
    """
    rows, labels, names = [], [], []

    def add(result, right: bool, name: str) -> None:
        if result.evidence is None:  # failed before any evidence: no decision to learn
            return
        rows.append(result.evidence.features())
        labels.append(1.0 if right else 0.0)
        names.append(name)

    for preset in ("easy", "hard", "eye", "eye-hard"):
        for pair in preset_pairs(images, preset, true_pairs, seed):
            result = register(*pair.load())
            error = pair_error(result_transform(result), pair.points_fixed, pair.points_moving)
            add(result, error <= RIGHT_PX, f"{preset}:{pair.name}")
    everything = impostor_pairs(images)
    order = np.random.default_rng(seed).permutation(len(everything))[:impostors]
    for i in order:
        pair = everything[i]
        result = register(*pair.load())
        right = False
        if pair.points_fixed is not None:
            error = pair_error(result_transform(result), pair.points_fixed, pair.points_moving)
            right = error <= ROTATION_TOLERANCE
        add(result, right, pair.name)
    return np.asarray(rows), np.asarray(labels), names


def fit_logistic(
    features: np.ndarray, labels: np.ndarray, l2: float = 1e-2, source: str = ""
) -> Calibration:
    """Logistic regression on standardised features, both classes weighted equally.

    Raises:
        ValueError: a class is missing.
    """
    if labels.min() == labels.max():
        raise ValueError("calibration needs both right and wrong registrations")
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-6] = 1.0
    z = (features - mean) / scale
    weight = np.where(labels > 0.5, 0.5 / labels.mean(), 0.5 / (1.0 - labels.mean()))

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        logit = z @ w + b
        p = 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))
        eps = 1e-12
        nll = -(weight * (labels * np.log(p + eps) + (1 - labels) * np.log(1 - p + eps))).mean()
        grad_logit = weight * (p - labels) / len(labels)
        grad = np.concatenate([z.T @ grad_logit + 2 * l2 * w, [grad_logit.sum()]])
        return nll + l2 * float(w @ w), grad

    theta = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B").x
    return Calibration(
        weights=tuple(round(float(v), 4) for v in theta[:-1]),
        bias=round(float(theta[-1]), 4),
        mean=tuple(round(float(v), 4) for v in mean),
        scale=tuple(round(float(v), 4) for v in scale),
        source=source,
    )


def main(argv: Sequence[str] | None = None) -> int:
    import functools

    from fundusfeat.pipeline.register import register as register_pair

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=["training/splits/train.txt"])
    parser.add_argument("--true-pairs", type=int, default=24, help="per synthetic preset")
    parser.add_argument("--impostors", type=int, default=192)
    args = parser.parse_args(argv)
    images = expand_image_args(args.images)
    # no threshold and the fewest inliers a homography needs: every pair that reaches the
    # verification at all (impostors mostly fail before it) teaches the calibration
    register = functools.partial(register_pair, threshold=0.0, min_inliers=4)
    x, y, names = collect(register, images, args.true_pairs, args.impostors)
    source = (
        f"python -m fundusfeat.evaluation.calibration ({len(y)} training-image pairs: "
        f"{int(y.sum())} right, {int(len(y) - y.sum())} wrong; {datetime.date.today()})"
    )
    calibration = fit_logistic(x, y, source=source)
    probs = np.array([1 / (1 + math.exp(-max(-50, min(50, calibration.logit(row))))) for row in x])
    print(f"{len(y)} pairs with evidence, {int(y.sum())} right", file=sys.stderr)
    print(f"lowest right: {probs[y > 0.5].min():.4f}", file=sys.stderr)
    print(f"highest wrong: {probs[y < 0.5].max():.4f}", file=sys.stderr)
    for name, p, label in sorted(zip(names, probs, y, strict=True), key=lambda t: t[1]):
        if (label > 0.5 and p < 0.9) or (label < 0.5 and p > 0.1):
            print(f"  {name}: p={p:.3f} label={int(label)}", file=sys.stderr)
    print(dict(zip(FEATURES, calibration.weights, strict=True)), file=sys.stderr)
    print(calibration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
