"""Forward time of the networks on the CPU, alternated in one process: the network alone,
as detection runs it (folded, channels-last input of a prepared image).

Usage: ``python examples/network_speed.py [IMAGE] [--sides 1011,640] [--repeat 6]
[--models fast,lean,lean-s1,lean-dw,lean-dw-s1] [--threads 2]``. Without an image, the
embedded demo photograph.
Untrained networks are timed with their He initialisation (the time does not depend on
the weights).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import cv2
import torch
import torch.nn.functional as F


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="a fundus photograph (default: the demo one)")
    parser.add_argument("--sides", default="1011,640", help="square input sides (px)")
    parser.add_argument("--models", default="fast,lean,lean-s1,lean-dw,lean-dw-s1")
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from fundusfeat.features import models
    from fundusfeat.features.network import fold_for_inference
    from fundusfeat.features.prepare import prepare
    from fundusfeat.features.settings import DetectorConfig
    from fundusfeat.io.demo import load_demo_pair

    img = cv2.imread(args.image) if args.image else load_demo_pair()[0]
    if img is None:
        parser.error(f"cannot read {args.image}")
    tensor = prepare(img, None, DetectorConfig(target_diameter=None), torch.device("cpu")).tensor
    names = args.models.split(",")
    nets = {name: fold_for_inference(models.get(name).build().eval()) for name in names}
    for side in (int(s) for s in args.sides.split(",")):
        x = F.interpolate(tensor, size=(side, side), mode="bilinear", align_corners=False)
        x = x.contiguous(memory_format=torch.channels_last)
        times: dict[str, list[float]] = {name: [] for name in nets}
        with torch.inference_mode():
            for _ in range(args.repeat + 1):  # the first round warms up
                for name, net in nets.items():
                    start = time.perf_counter()
                    net(x)
                    times[name].append(time.perf_counter() - start)
        row = ", ".join(f"{n} {statistics.median(t[1:]) * 1000:.1f} ms" for n, t in times.items())
        print(f"{side} x {side}: {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
