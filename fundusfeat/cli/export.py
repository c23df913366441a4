"""``fundusfeat export-onnx``: write a network as ONNX and check it against torch.

Exit codes: 0 written; 2 a missing ``onnx`` package, unreadable weights or an unwritable
output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from fundusfeat.features import models
from fundusfeat.features.checkpoint import load_network
from fundusfeat.features.onnx import OPSET, OUTPUT_NAMES, OnnxNetwork, export_onnx


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``export-onnx`` subcommand."""
    p = subparsers.add_parser(
        "export-onnx",
        help="export the network to ONNX",
        description="Write the network as ONNX (dynamic batch/height/width) and check that "
        "OpenCV DNN reproduces the torch outputs.",
    )
    p.add_argument("--model", choices=models.names(), default=models.default_model())
    p.add_argument("--weights", default="default", help="'default' or a checkpoint path")
    p.add_argument(
        "--out", type=Path, default=None, help="output file (default fundusfeat_<model>.onnx)"
    )
    p.add_argument("--opset", type=int, default=OPSET)
    p.set_defaults(func=run_export)
    return p


def run_export(args: argparse.Namespace) -> int:
    """Export and verify on a random 256x320 input; prints the max abs differences."""
    try:
        net = load_network(args.model, args.weights, "cpu")
        out = args.out or Path(f"fundusfeat_{net.name}.onnx")
        export_onnx(net, out, args.opset)
    except (ImportError, FileNotFoundError, ValueError, OSError) as err:
        print(f"fundusfeat export-onnx: {err}", file=sys.stderr)
        return 2
    onnx_net = OnnxNetwork(out.read_bytes(), net.descriptor_stride, net.dim, net.name)
    x = torch.randn(1, 3, 256, 320, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        diffs = [float((a - b).abs().max()) for a, b in zip(net(x), onnx_net(x), strict=True)]
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    print(
        "max |torch - opencv-dnn|: "
        + ", ".join(f"{n} {d:.2e}" for n, d in zip(OUTPUT_NAMES, diffs, strict=True))
    )
    return 0
