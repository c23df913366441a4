"""``fundusfeat evaluate`` and ``fundusfeat bench``: argument parsing and printing.

The only module of :mod:`fundusfeat.evaluation` that prints. Exit codes: 0 done (failed
registrations are results, not errors); 2 bad arguments or unreadable files.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fundusfeat.cli.options import positive_float, positive_int, positive_int_list
from fundusfeat.evaluation import (
    bench,
    changes_bench,
    impostors,
    montage_bench,
    peers,
    plot,
    presets,
    report,
)
from fundusfeat.evaluation.fire import load_fire
from fundusfeat.evaluation.pairs import rescale_moving
from fundusfeat.evaluation.registration_time import pipeline_table, time_pipelines
from fundusfeat.evaluation.runner import oracle_results, run_evaluation
from fundusfeat.evaluation.shift import SHIFTS, shift_repeatability
from fundusfeat.evaluation.sources import benchmark_images
from fundusfeat.features.hardware import cpu_model
from fundusfeat.io import images as images
from fundusfeat.io.progress import ProgressLine
from fundusfeat.pipeline.register import DEFAULT_METHOD, GLOBAL_KEYPOINTS, TRANSFORM_MODELS

DEFAULT_METHODS = "sift-clahe,r2d2fundus"
DEFAULT_BENCH_METHODS = "sift,sift-clahe,r2d2fundus"
PAIRS_DEFAULT = 36


def _error(command: str, message: object) -> int:
    print(f"fundusfeat {command}: error: {message}", file=sys.stderr)
    return 2


def machine_info() -> dict[str, Any]:
    """CPU model, core count, platform and library versions, for result files."""
    import cv2
    import numpy

    from fundusfeat._version import __version__

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "fundusfeat": __version__,
        "opencv": cv2.__version__,
        "numpy": numpy.__version__,
        "torch": getattr(sys.modules.get("torch"), "__version__", None),
        "date": datetime.date.today().isoformat(),
    }


def _write_outputs(out: Path, stem: str, data: dict[str, Any], table: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (out / f"{stem}.md").write_text(table + "\n", encoding="utf-8")


# ------------------------------------------------------------------------- evaluate
def add_evaluate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``fundusfeat evaluate`` (FIRE or synthetic pairs, methods side by side)."""
    p = subparsers.add_parser(
        "evaluate",
        help="registration score on FIRE or synthetic pairs, methods side by side",
        description="Register every pair with every method (same matching and estimator) and "
        "report the FIRE Registration Score (AUC of the success curve, 0..25 px) under the "
        "paper's convention (pooled, per category) and SuperRetina's (mAUC, P37 excluded).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--fire", type=Path, metavar="DIR", help="FIRE dataset root")
    source.add_argument(
        "--synthetic",
        nargs="*",
        metavar="IMAGES",
        help="image files, directories or .txt lists (never training images; none: the "
        "embedded demo photograph)",
    )
    source.add_argument(
        "--impostors",
        nargs="*",
        metavar="IMAGES",
        help="pairs that cannot be registered, made from these images (never training "
        "images; none: the embedded demo photograph): report false successes and confidences",
    )
    source.add_argument(
        "--montage",
        nargs="*",
        metavar="IMAGES",
        help="synthetic multi-field sets rendered from these source photographs (never "
        "training images; none: the embedded demo photograph): montage, spanning tree, star "
        "of pairwise registrations and OpenCV's Stitcher, every overlapping field pair scored",
    )
    source.add_argument(
        "--changes",
        nargs="*",
        metavar="IMAGES",
        help="comparison of visits: eye-model longitudinal pairs with painted lesions and "
        "their controls, rendered from these photographs (never training images, except "
        "with --calibrate; none: the embedded demo photograph): lesions found by kind and "
        "size, false alarms, clipped-red variants, fundusfeat and a plain difference",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="--changes: choose high, low and min_radius on a grid instead (training "
        "images only: training/splits/train.txt)",
    )
    p.add_argument(
        "--variants",
        default=",".join(changes_bench.VARIANTS),
        help=f"--changes: comma-separated variants (default {','.join(changes_bench.VARIANTS)})",
    )
    p.add_argument(
        "--layouts",
        default=",".join(montage_bench.LAYOUTS),
        help=f"--montage: comma-separated layouts (default {','.join(montage_bench.LAYOUTS)})",
    )
    p.add_argument(
        "--montage-size",
        type=positive_int,
        default=montage_bench.DEFAULT_SIZE,
        help=f"--montage: long side of the source photographs (default "
        f"{montage_bench.DEFAULT_SIZE})",
    )
    p.add_argument(
        "--figure",
        action="store_true",
        help="--montage with --out: also write the first set's montage and field graph",
    )
    p.add_argument(
        "--preset",
        choices=presets.NAMES,
        default="hard",
        help="synthetic pairs: homography presets easy/hard, eye-model presets eye/eye-hard "
        "(default hard)",
    )
    p.add_argument(
        "--pairs",
        type=positive_int,
        default=PAIRS_DEFAULT,
        help=f"synthetic pairs (default {PAIRS_DEFAULT}; --changes: "
        f"{changes_bench.DEFAULT_PAIRS} lesion pairs and as many controls)",
    )
    p.add_argument("--seed", type=int, default=0, help="synthetic benchmark seed")
    p.add_argument(
        "--moving-scale",
        type=positive_float,
        default=1.0,
        help="cross-resolution pairs: image 2 of every pair resized by this factor "
        "(e.g. 0.4, 0.6, 1.6; errors stay in image-1 pixels)",
    )
    p.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=f"comma-separated: {', '.join(peers.METHODS)} or module:factory "
        f"(default {DEFAULT_METHODS})",
    )
    p.add_argument(
        "--size",
        type=positive_int,
        help="working long side in pixels (default: full images; errors are always in "
        "original pixels)",
    )
    p.add_argument("--device", help="torch device for the learned methods (default: auto)")
    p.add_argument("--ransac-threshold", type=float, help="inlier threshold (working px)")
    p.add_argument(
        "--estimator",
        choices=("magsac", "ransac", "lmeds"),
        help="robust homography estimator for every method (default: fundusfeat.register's)",
    )
    p.add_argument(
        "--transform",
        choices=TRANSFORM_MODELS,
        help="transform model of every method (default: fundusfeat.register's, auto)",
    )
    p.add_argument(
        "--global-keypoints",
        type=positive_int,
        help="strongest keypoints per image in the global matching of every method "
        f"(default: fundusfeat.register's, {GLOBAL_KEYPOINTS})",
    )
    p.add_argument("--out", type=Path, help="write results.md, results.json, success.png here")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run_evaluate_command)
    return p


def _dataset_pairs(args: argparse.Namespace) -> tuple[list, dict[str, Any]]:
    if args.fire is not None:
        return load_fire(args.fire), {"dataset": "FIRE", "root": str(args.fire)}
    paths = benchmark_images(args.synthetic)
    pairs = presets.preset_pairs(paths, args.preset, args.pairs, args.seed)
    meta = {
        "dataset": "synthetic",
        "preset": args.preset,
        "pairs": args.pairs,
        "seed": args.seed,
        "images": [str(p) for p in paths],
    }
    return pairs, meta


def _evaluation_pairs(args: argparse.Namespace) -> tuple[list, dict[str, Any]]:
    pairs, meta = _dataset_pairs(args)
    if args.moving_scale != 1.0:
        pairs = [rescale_moving(p, args.moving_scale) for p in pairs]
        meta["moving_scale"] = args.moving_scale
    return pairs, meta


def run_evaluate_command(args: argparse.Namespace) -> int:
    """Run ``fundusfeat evaluate``; returns the exit code."""
    try:
        names = peers.parse_methods(args.methods)
        methods = {
            n: peers.make_registrar(
                n,
                args.device,
                args.ransac_threshold,
                args.estimator,
                args.transform,
                args.global_keypoints,
            )
            for n in names
        }
        if args.impostors is not None:
            return _run_impostors(args, names, methods)
        if args.montage is not None:
            return _run_montage(args)
        if args.changes is not None:
            return _run_changes(args)
        pairs, meta = _evaluation_pairs(args)
    except (FileNotFoundError, ValueError) as exc:
        return _error("evaluate", exc)
    results = run_evaluation(pairs, methods, args.size, ProgressLine(not args.quiet))
    results += oracle_results(pairs)
    reports = report.summarize(results)
    meta.update(
        size=args.size,
        methods=names,
        estimator=args.estimator or DEFAULT_METHOD,
        transform=args.transform or "auto",
        global_keypoints=args.global_keypoints or GLOBAL_KEYPOINTS,
        command=" ".join(sys.argv),
        **machine_info(),
    )
    data = report.to_json(reports, meta)
    table = report.markdown_table(reports)
    if args.out is not None:
        _write_outputs(args.out, "results", data, table)
        title = f"{meta['dataset']} {meta.get('preset', '')}".strip()
        plot.plot_success(reports, args.out / "success.png", title)
    print(json.dumps(data, indent=2) if args.json else table)
    return 0


def _run_montage(args: argparse.Namespace) -> int:
    """``fundusfeat evaluate --montage IMAGES``: the multi-field benchmark."""
    from fundusfeat.features.feature2d import R2D2Fundus

    paths = benchmark_images(args.montage)
    layouts = [x for x in args.layouts.split(",") if x]
    detector = R2D2Fundus.create(device=args.device)
    bench_result = montage_bench.run_montage_benchmark(
        paths,
        layouts=layouts,
        seed=args.seed,
        size=args.montage_size,
        detector=detector,
        model=args.transform if args.transform in ("homography", "quadratic") else "auto",
        progress=ProgressLine(not args.quiet),
    )
    bench_result.meta.update(
        images=[str(p) for p in paths], command=" ".join(sys.argv), **machine_info()
    )
    data = montage_bench.to_json(bench_result)
    text = montage_bench.markdown_report(bench_result)
    if args.out is not None:
        _write_outputs(args.out, "montage", data, text)
        if args.figure:
            _montage_figures(paths[0], layouts[0], args, detector)
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def _run_changes(args: argparse.Namespace) -> int:
    """``fundusfeat evaluate --changes IMAGES [--calibrate]``: the comparison benchmark."""
    from fundusfeat.features.feature2d import R2D2Fundus

    paths = benchmark_images(args.changes)
    variants = [v for v in args.variants.split(",") if v]
    methods = changes_bench.grid_params() if args.calibrate else changes_bench.default_methods()
    pairs = args.pairs if args.pairs != PAIRS_DEFAULT else changes_bench.DEFAULT_PAIRS
    result = changes_bench.run_changes_benchmark(
        paths,
        num_pairs=pairs,
        seed=args.seed,
        variants=variants,
        methods=methods,
        detector=R2D2Fundus.create(device=args.device),
        progress=ProgressLine(not args.quiet),
    )
    result.meta.update(images=[str(p) for p in paths], command=" ".join(sys.argv), **machine_info())
    data = changes_bench.to_json(result)
    if args.calibrate:
        best, rows = changes_bench.calibrate(result, methods)
        head = [
            "parameters",
            "worst recall",
            "worst false share",
            "worst regions/control",
            "within bounds",
        ]
        text = report.markdown(head, rows) + f"\n\nChosen: {best or 'none within the bounds'}"
        data["calibration"] = {"chosen": best, "rows": rows}
    else:
        text = changes_bench.markdown_report(result)
    if args.out is not None:
        _write_outputs(args.out, "calibration" if args.calibrate else "changes", data, text)
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def _montage_figures(path: Path, layout: str, args: argparse.Namespace, detector: Any) -> None:
    """The first source's first-layout set: its montage (shrunk) and field graph."""
    import cv2

    from fundusfeat.evaluation.fields import make_field_set
    from fundusfeat.io.figures import shrink
    from fundusfeat.io.montage_figures import field_graph_figure
    from fundusfeat.pipeline.montage import montage

    source = montage_bench.source_image(Path(path), args.montage_size)
    fs = make_field_set(source, layout, args.seed)
    result = montage(fs.images, detector=detector)
    sizes = [(im.shape[1], im.shape[0]) for im in fs.images]
    if result.image.size:
        cv2.imwrite(str(args.out / "montage.jpg"), shrink(result.image, 1600))
    cv2.imwrite(str(args.out / "field_graph.png"), field_graph_figure(result, sizes, 1600))


def _run_impostors(args: argparse.Namespace, names: list[str], methods: dict) -> int:
    """``fundusfeat evaluate --impostors IMAGES``: false successes and confidences."""
    paths = benchmark_images(args.impostors)
    pairs = impostors.impostor_pairs(paths)
    results = impostors.run_impostors(pairs, methods, ProgressLine(not args.quiet))
    header, rows = impostors.impostor_table(results)
    text = report.markdown(header, rows)
    text += "\n\nConfidence of the impostor pairs (rotations rightly registered left out):\n\n"
    text += report.markdown(*impostors.confidence_histogram(results))
    meta = {
        "dataset": "impostors",
        "pairs": len(pairs),
        "methods": names,
        "images": [str(p) for p in paths],
        "command": " ".join(sys.argv),
        **machine_info(),
    }
    data = {"meta": meta, "results": [report.json_record(asdict(r)) for r in results]}
    if args.out is not None:
        _write_outputs(args.out, "impostors", data, text)
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


# --------------------------------------------------------------------------- bench
def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``fundusfeat bench`` (detect + describe time and memory per image)."""
    p = subparsers.add_parser(
        "bench",
        help="seconds and memory per image for detect+describe, side by side with SIFT",
        description="Time detectAndCompute per image (median), keypoints per image and peak "
        "memory, with images resized so their field of view has each given diameter.",
    )
    p.add_argument(
        "images", nargs="*", help="images, directories or .txt lists (default: demo image)"
    )
    p.add_argument(
        "--sizes", type=positive_int_list, default=(768, 1152), help="FOV diameters (px)"
    )
    p.add_argument("--methods", default=DEFAULT_BENCH_METHODS, help="comma-separated methods")
    p.add_argument("--threads", type=positive_int, default=2, help="CPU threads")
    p.add_argument("--repeat", type=positive_int, default=3, help="timed calls per image")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto = cpu, plus cuda when available",
    )
    p.add_argument("--no-isolate", action="store_true", help="measure in this process")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also report the share of the learned methods' time spent in the network forward",
    )
    p.add_argument(
        "--pipeline",
        action="store_true",
        help="also time a whole fundusfeat.register() per pair against the classical "
        "SIFT-CLAHE pipeline (each image and an easy synthetic view of it)",
    )
    p.add_argument(
        "--shift",
        action="store_true",
        help="also report shift repeatability: keypoints found again within 1 px after "
        "translating the image",
    )
    p.add_argument(
        "--invariance",
        action="store_true",
        help="also run OpenCV's invariance protocol (rotation -30..30, scale 0.6-1.6: "
        "repeatability, match ratio, correct matches) on the first image at the first size",
    )
    p.add_argument("--out", type=Path, help="write bench.md and bench.json here")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=run_bench_command)
    return p


def _bench_images(args: list[str]) -> list:
    return [images.read_image(p) for p in benchmark_images(args)]


def _devices(choice: str) -> tuple[str, ...]:
    if choice == "auto":
        return ("cpu", "cuda") if bench.cuda_available() else ("cpu",)
    return (choice,)


def _profile_rows(image: Any, config: bench.BenchConfig) -> list[dict[str, Any]]:
    """Forward-time share of each learned method, device and size (in this process)."""
    from fundusfeat.evaluation.profile import forward_share

    bench.set_threads(config.threads)
    rows = []
    for method in filter(peers.is_learned, config.methods):
        for device in config.devices:
            detector = peers.make_detector(method, device=device)
            for size in config.sizes:
                p = forward_share(detector, bench.resize_to_fov(image, size), config.repeat)
                rows.append(
                    {
                        "method": method,
                        "device": device,
                        "size": size,
                        "total_s": p.total_s,
                        "forward_s": p.forward_s,
                        "share": p.share,
                        "levels": p.levels,
                    }
                )
    return rows


def _profile_table(rows: list[dict[str, Any]]) -> str:
    header = ["method", "device", "FOV px", "s/image", "forward s", "forward share", "levels"]
    body = [
        [
            r["method"],
            r["device"],
            r["size"],
            f"{r['total_s']:.3f}",
            f"{r['forward_s']:.3f}",
            f"{100 * r['share']:.1f} %",
            r["levels"],
        ]
        for r in rows
    ]
    return report.markdown(header, body)


def _pipeline_rows(imgs: list, config: bench.BenchConfig) -> list[tuple[str, int, Any]]:
    """Whole-registration timings of each learned method (``r2d2fundus`` when the list
    names none) per FOV size: ``(method, size, timing)`` (CPU, in this process)."""
    from functools import partial

    from fundusfeat.evaluation.synthetic import PRESETS, make_synthetic_pair
    from fundusfeat.pipeline.register import register

    bench.set_threads(config.threads)
    learned = [m for m in config.methods if peers.is_learned(m)] or ["r2d2fundus"]
    pairs = {}
    for size in config.sizes:
        pairs[size] = []
        for i, image in enumerate(imgs):
            small = bench.resize_to_fov(image, size)
            pairs[size].append((small, make_synthetic_pair(small, PRESETS["easy"], i).image2))
    rows = []
    for method in learned:
        detector = peers.make_detector(method, device="cpu")
        for size in config.sizes:
            run = partial(register, detector=detector)
            rows.append((method, size, time_pipelines(pairs[size], run, config.threads)))
    return rows


def _shift_rows(imgs: list, config: bench.BenchConfig) -> list[dict[str, Any]]:
    """Mean shift repeatability of each method per FOV size (CPU, in this process)."""
    import numpy

    bench.set_threads(config.threads)
    rows = []
    for method in config.methods:
        detector = peers.make_detector(method, device="cpu")
        for size in config.sizes:
            found = numpy.mean(
                [shift_repeatability(detector, bench.resize_to_fov(im, size)) for im in imgs],
                axis=0,
            )
            rows.append({"method": method, "size": size, "found": found.tolist()})
    return rows


def run_bench_command(args: argparse.Namespace) -> int:
    """Run ``fundusfeat bench``; returns the exit code."""
    try:
        config = bench.BenchConfig(
            methods=tuple(peers.parse_methods(args.methods)),
            sizes=args.sizes,
            devices=_devices(args.device),
            threads=args.threads,
            repeat=args.repeat,
            warmup=args.warmup,
            isolate=not args.no_isolate,
        )
        imgs = _bench_images(args.images)
    except (FileNotFoundError, ValueError) as exc:
        return _error("bench", exc)
    if "cuda" in config.devices and not bench.cuda_available():
        return _error("bench", "--device cuda: no CUDA device")
    results = bench.run_bench(imgs, config, ProgressLine(not args.quiet))
    meta = {"command": " ".join(sys.argv), "num_images": len(imgs), **machine_info()}
    data = {"meta": meta, "config": asdict(config), "results": [asdict(r) for r in results]}
    table = bench.bench_table(results)
    if args.profile:
        data["profile"] = _profile_rows(imgs[0], config)
        table += "\n\n" + _profile_table(data["profile"])
    if args.pipeline:
        rows = _pipeline_rows(imgs, config)
        data["pipeline"] = [
            {"method": m, "size": s, **asdict(t), "ratio": t.ratio} for m, s, t in rows
        ]
        table += "\n\n" + pipeline_table([(f"{m}, FOV {s} px", t) for m, s, t in rows])
    if args.shift:
        data["shift"] = _shift_rows(imgs, config)
        header = ["method", "FOV px", *(f"({dx:g},{dy:g})" for dx, dy in SHIFTS)]
        body = [[r["method"], r["size"], *(f"{v:.2f}" for v in r["found"])] for r in data["shift"]]
        table += "\n\n" + report.markdown(header, body)
    if args.invariance:
        from fundusfeat.evaluation import invariance

        bench.set_threads(config.threads)
        image = bench.resize_to_fov(imgs[0], config.sizes[0])
        dets = {m: peers.make_detector(m, device="cpu") for m in config.methods}
        rows = invariance.run(dets, image)
        data["invariance"] = {
            "rows": [r.as_dict() for r in rows],
            "summary": invariance.summary(rows),
        }
        table += "\n\n" + invariance.format_table(rows)
    if args.out is not None:
        _write_outputs(args.out, "bench", data, table)
    print(json.dumps(data, indent=2) if args.json else table)
    return 0
