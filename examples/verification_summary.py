"""Summarise the verification from evaluation outputs: true pairs refused, impostors
accepted, and the confidence histograms of both, for one method.

Reads the ``results.json`` of ``fundusfeat evaluate --synthetic ... --out DIR`` runs (true
pairs) and the ``impostors.json`` of ``fundusfeat evaluate --impostors ... --out DIR``
(pairs that cannot be registered). Run from the repository root after
``docs/run_benchmarks.sh``::

    python examples/verification_summary.py --method r2d2fundus \\
        --true results/easy results/hard-magsac results/eye results/eye-hard \\
        --impostors results/impostors
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from fundusfeat.evaluation.report import confidence_histogram, markdown


def _confidence(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="r2d2fundus")
    parser.add_argument("--true", nargs="+", type=Path, required=True, help="evaluate --out DIRs")
    parser.add_argument("--impostors", type=Path, required=True, help="the impostors' --out DIR")
    args = parser.parse_args()

    rows, true_conf = [], []
    for folder in args.true:
        data = json.loads((folder / "results.json").read_text())
        method = next(m for m in data["methods"] if m["method"] == args.method)
        conf = [_confidence(p["confidence"]) for p in method["pairs"]]
        refused = [p for p in method["pairs"] if not p["success"]]
        true_conf += conf
        label = f"{data['meta'].get('preset', folder.name)} ({folder.name})"
        rows.append(
            [label, len(conf), f"{len(refused)}/{len(conf)} refused", f"min {min(conf):.3f}"]
        )
    imp = json.loads((args.impostors / "impostors.json").read_text())["results"]
    imp = [r for r in imp if r["method"] == args.method]
    wrong = [r for r in imp if r["false_success"] or not r["success"]]
    false = sum(r["false_success"] for r in imp)
    imp_conf = [_confidence(r["confidence"]) for r in wrong]
    rows.append(["impostors", len(imp), f"{false}/{len(imp)} accepted", f"max {max(imp_conf):.3f}"])
    print(markdown(["pairs", "n", "errors", "confidence"], rows))
    print()
    print(markdown(*confidence_histogram({"true pairs": true_conf, "impostors": imp_conf})))
    margin = min(true_conf) - max(imp_conf)
    print(f"\nmargin: lowest true-pair confidence - highest impostor confidence = {margin:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
