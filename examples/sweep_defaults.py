"""Compare inference settings of the default detector on held-out synthetic pairs.

This is how the ``fast`` model's defaults in ``fundusfeat/features/models.py`` were chosen
(docs/benchmarks.md, "Choosing the defaults"): every setting registers the same pairs
with ``register()`` and is scored with the Registration Score. Run from the repository
root::

    python examples/sweep_defaults.py --images training/splits/val.txt ../shared/data/retina.jpg \\
        --seed 1 --presets easy,hard,eye

Use a seed other than the benchmark's (0), so the benchmark does not grade its own
tuning.
"""

from __future__ import annotations

import argparse
import functools

import fundusfeat
from fundusfeat.evaluation.presets import preset_pairs
from fundusfeat.evaluation.report import summarize
from fundusfeat.evaluation.runner import run_evaluation
from fundusfeat.evaluation.sources import benchmark_images

SETTINGS = {
    "FOV 1000 (the default)": ({}, {}),
    "FOV 1000, all keypoints matched globally": ({}, dict(global_keypoints=None)),
    "FOV 880": (dict(target_diameter=880.0), {}),
    "FOV 768": (dict(target_diameter=768.0), {}),
    "FOV 640": (dict(target_diameter=640.0), {}),
}
"""Settings compared: keyword arguments of ``R2D2Fundus.create`` (one scale, thresholds
0.5, never enlarged, not resampled within 10 % of the working size) and of
``register``. The images are at their own size (FOV about 1400-1540 px), so every
setting shrinks them."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images",
        nargs="*",
        default=[],
        help="held-out photographs, e.g. training/splits/val.txt ../shared/data/retina.jpg "
        "(default: the embedded demo photograph)",
    )
    parser.add_argument("--presets", default="easy,hard,eye")
    parser.add_argument("--pairs", type=int, default=36)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    images = benchmark_images(args.images)
    methods = {
        name: functools.partial(
            fundusfeat.register, detector=fundusfeat.R2D2Fundus.create(**detector), **options
        )
        for name, (detector, options) in SETTINGS.items()
    }
    print("| preset | setting | AUC | median px | failed | s/pair |")
    print("|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        pairs = preset_pairs(images, preset, args.pairs, seed=args.seed)
        for report in summarize(run_evaluation(pairs, methods)):
            score = report.scores.pooled
            failed = sum(not r.success for r in report.results)
            print(
                f"| {preset} | {report.method} | {score.auc:.3f} | {score.median_error:.2f} "
                f"| {failed}/{len(pairs)} | {report.seconds_per_pair:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
