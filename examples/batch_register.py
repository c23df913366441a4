"""Register many fundus image pairs and write one CSV row per pair.

Pairs come from a folder (FIRE-style names: ``<name>_1.<ext>`` pairs with
``<name>_2.<ext>``) or from a CSV file with columns ``image1,image2`` (paths relative
to the CSV file). All images are read into memory and registered with
``fundusfeat.registration.register_many``, which extracts their features in batches.

Usage::

    python examples/batch_register.py --folder FIRE/Images --out results.csv
    python examples/batch_register.py --csv pairs.csv --out results.csv --model fast

Output columns: image1, image2, success, reason, num_inliers, H (9 numbers, row-major,
mapping image-1 pixels onto image 2; empty when no homography was found).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2

import fundusfeat
from fundusfeat.registration import register_many

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


def pairs_from_folder(folder: Path) -> list[tuple[Path, Path]]:
    """``<name>_1.<ext>`` / ``<name>_2.<ext>`` pairs of ``folder``, sorted by name."""
    images = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    return [
        (path, images[stem[:-2] + "_2"])
        for stem, path in sorted(images.items())
        if stem.endswith("_1") and stem[:-2] + "_2" in images
    ]


def pairs_from_csv(table: Path) -> list[tuple[Path, Path]]:
    """Rows ``image1,image2`` of a CSV file with a header; paths relative to the file."""
    with table.open(newline="") as f:
        return [(table.parent / r["image1"], table.parent / r["image2"]) for r in csv.DictReader(f)]


def read_pairs(pairs: Iterable[tuple[Path, Path]]) -> Iterator[tuple]:
    """Yield (img1, img2) BGR arrays; raises OSError naming an unreadable file."""
    for path1, path2 in pairs:
        images = [cv2.imread(str(p)) for p in (path1, path2)]
        for path, image in zip((path1, path2), images, strict=True):
            if image is None:
                raise OSError(f"cannot read {path}")
        yield images[0], images[1]


def write_results(out: Path, pairs: list[tuple[Path, Path]], results: list) -> None:
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image1", "image2", "success", "reason", "num_inliers", "H"])
        for (path1, path2), res in zip(pairs, results, strict=True):
            h = "" if res.H is None else " ".join(f"{v:.9g}" for v in res.H.ravel())
            writer.writerow([path1, path2, res.success, res.reason, res.num_inliers, h])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", type=Path, help="folder of <name>_1 / <name>_2 images")
    source.add_argument("--csv", type=Path, help="CSV file with columns image1,image2")
    parser.add_argument("--out", type=Path, default=Path("results.csv"))
    parser.add_argument("--model", choices=fundusfeat.models.names(), default=None)
    args = parser.parse_args()

    pairs = pairs_from_folder(args.folder) if args.folder else pairs_from_csv(args.csv)
    if not pairs:
        parser.error("no image pairs found")
    options = {} if args.model is None else {"model": args.model}
    detector = fundusfeat.R2D2Fundus.create(**options)
    results = register_many(list(read_pairs(pairs)), detector=detector)
    write_results(args.out, pairs, results)
    registered = sum(bool(r.success) for r in results)
    print(f"registered {registered} / {len(pairs)} pairs; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
