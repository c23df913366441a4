"""Speed and memory of detect + describe, learned and classical detectors side by side.

For each method, device and size, every image is resized so that its field of view
(FOV, estimated by :func:`fundusfeat.features.fov.estimate_fov`) has a diameter of
``size`` pixels; learned detectors then run exactly as ``R2D2Fundus.create()`` would
(their own FOV normalisation on, so the time includes resizing to the model's working
FOV, its registry entry's ``defaults.target_diameter`` in :mod:`fundusfeat.features.models`).
Timing: ``warmup`` untimed calls on the first image, then ``repeat`` timed
``detectAndCompute`` calls per image (``torch.cuda.synchronize`` around each call on
CUDA); the reported time is the median over all timed calls.

Memory: the peak resident set size of the process (``VmHWM`` of ``/proc/self/status``,
else ``ru_maxrss``), and on CUDA ``torch.cuda.max_memory_allocated``. With
``isolate=True`` each (method, device, size) runs in a fresh spawned process, so the
peak is that configuration's own; ``base_rss_mib`` is the same process's RSS after its
imports and before the detector is created (the Python + torch + OpenCV baseline).
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from fundusfeat.evaluation.peers import is_learned, make_detector
from fundusfeat.evaluation.report import markdown
from fundusfeat.features.fov import estimate_fov
from fundusfeat.io.arrays import resize_image

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    """What to measure.

    Attributes:
        methods: method names (see :mod:`fundusfeat.evaluation.peers`).
        sizes: FOV diameters in pixels.
        devices: ``"cpu"`` and/or ``"cuda"``; OpenCV methods run only on ``"cpu"``.
        threads: CPU threads for torch and OpenCV (``torch.set_num_threads``,
            ``cv2.setNumThreads``).
        repeat: timed calls per image (>= 1).
        warmup: untimed calls before timing (>= 0).
        isolate: run each configuration in its own process (isolated peak memory).
    """

    methods: tuple[str, ...] = ("sift", "sift-clahe", "r2d2fundus")
    sizes: tuple[int, ...] = (768, 1152)
    devices: tuple[str, ...] = ("cpu",)
    threads: int = 2
    repeat: int = 3
    warmup: int = 1
    isolate: bool = True

    def __post_init__(self) -> None:
        if not self.methods or not self.sizes or not self.devices:
            raise ValueError("methods, sizes and devices must not be empty")
        if any(s < 16 for s in self.sizes):
            raise ValueError(f"sizes must be >= 16 pixels, got {self.sizes}")
        if any(d not in ("cpu", "cuda") for d in self.devices):
            raise ValueError(f"devices must be 'cpu' or 'cuda', got {self.devices}")
        if self.threads < 1 or self.repeat < 1 or self.warmup < 0:
            raise ValueError("threads and repeat must be >= 1, warmup >= 0")


@dataclass(frozen=True)
class BenchResult:
    """One (method, device, size) measurement.

    Attributes:
        method, device: what ran where.
        size: FOV diameter of the images (pixels).
        image_size: (width, height) of the first resized image (pixels).
        threads: CPU threads.
        seconds: median seconds per image of detect + describe.
        keypoints: mean keypoints per image.
        peak_rss_mib: peak resident memory of the measuring process (MiB).
        base_rss_mib: its resident memory before the detector was created (MiB).
        peak_gpu_mib: peak torch CUDA memory allocated (MiB), None on CPU.
        create_seconds: creating the detector (in an isolated run, a fresh process: what
            every new command pays, e.g. OpenVINO's compilation).
        first_seconds: its first call on the first image (one-time costs of a first
            call, e.g. allocator warm-up), the first warm-up call.
    """

    method: str
    device: str
    size: int
    image_size: tuple[int, int]
    threads: int
    seconds: float
    keypoints: float
    peak_rss_mib: float
    base_rss_mib: float
    peak_gpu_mib: float | None
    create_seconds: float = 0.0
    first_seconds: float = 0.0


def resize_to_fov(image: np.ndarray, size: int) -> np.ndarray:
    """Resize ``image`` so its FOV diameter is ``size`` pixels (INTER_AREA/LINEAR)."""
    fov = estimate_fov(image)
    return resize_image(image, size / fov.diameter)[0]


def rss_mib(peak: bool) -> float:
    """Current (``VmRSS``) or peak (``VmHWM``) resident memory in MiB."""
    key = "VmHWM:" if peak else "VmRSS:"
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024.0 * 1024.0) if sys.platform == "darwin" else kib / 1024.0


def set_threads(threads: int) -> None:
    cv2.setNumThreads(threads)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def measure(
    method: str, device: str, size: int, images: Sequence[np.ndarray], config: BenchConfig
) -> BenchResult:
    """Measure one configuration in this process (see the module docstring).

    Args:
        method: method name.
        device: ``"cpu"`` or ``"cuda"``.
        size: FOV diameter the ``images`` were resized to (for the record).
        images: (H, W, 3) uint8 BGR images, already resized.
        config: threads, repeat and warm-up.
    """
    set_threads(config.threads)
    base = rss_mib(peak=False)
    start = time.perf_counter()
    detector = make_detector(method, device=device)
    create = time.perf_counter() - start
    set_threads(config.threads)
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    first = 0.0
    for n in range(config.warmup):
        _sync(device)
        start = time.perf_counter()
        detector.detectAndCompute(images[0], None)
        _sync(device)
        if n == 0:
            first = time.perf_counter() - start
    times, counts = [], []
    for image in images:
        for _ in range(config.repeat):
            _sync(device)
            start = time.perf_counter()
            kps, _desc = detector.detectAndCompute(image, None)
            _sync(device)
            times.append(time.perf_counter() - start)
            counts.append(len(kps))
    gpu = None
    if device == "cuda":
        import torch

        gpu = torch.cuda.max_memory_allocated() / 2**20
    return BenchResult(
        method=method,
        device=device,
        size=size,
        image_size=(images[0].shape[1], images[0].shape[0]),
        threads=config.threads,
        seconds=statistics.median(times),
        keypoints=float(np.mean(counts)),
        # the kernel's per-thread RSS counters lag: VmHWM read later can trail a VmRSS
        # read earlier by a few pages, and the peak is at least what was seen
        peak_rss_mib=max(rss_mib(peak=True), base),
        base_rss_mib=base,
        peak_gpu_mib=gpu,
        create_seconds=create,
        first_seconds=first,
    )


def _measure_star(args: tuple) -> BenchResult:
    return measure(*args)


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return torch.cuda.is_available()


def run_bench(
    images: Sequence[np.ndarray],
    config: BenchConfig,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[BenchResult]:
    """Measure every (method, device, size); OpenCV methods only on CPU.

    Args:
        images: (H, W, 3) uint8 BGR fundus photographs at any size.
        config: the :class:`BenchConfig`.
        progress: optional callback ``(done, total, label)``.

    Returns:
        One :class:`BenchResult` per configuration, size-major then method.
    """
    if not images:
        raise ValueError("images: expected at least one image")
    jobs = [
        (method, device, size)
        for size in config.sizes
        for method in config.methods
        for device in config.devices
        if device == "cpu" or is_learned(method)
    ]
    resized = {size: [resize_to_fov(img, size) for img in images] for size in config.sizes}
    context = multiprocessing.get_context("spawn")
    out = []
    for done, (method, device, size) in enumerate(jobs, 1):
        args = (method, device, size, resized[size], config)
        if config.isolate:
            with context.Pool(1) as pool:
                out.append(pool.apply(_measure_star, (args,)))
        else:
            out.append(measure(*args))
        logger.info("bench %s %s %d: %.3f s", method, device, size, out[-1].seconds)
        if progress is not None:
            progress(done, len(jobs), f"{method} {device} {size}")
    return out


def bench_table(results: Sequence[BenchResult]) -> str:
    """A markdown table of the results; ``x SIFT`` is the time over ``sift``'s at the same
    size and threads ("-" where sift was not measured)."""
    columns = ["method", "device", "FOV px", "image", "threads", "s/image", "x SIFT"]
    columns += ["create s", "1st call s", "keypoints", "peak RSS MiB", "base RSS MiB"]
    columns += ["peak GPU MiB"]
    sift = {(r.size, r.threads): r.seconds for r in results if r.method == "sift"}

    def ratio(r: BenchResult) -> str:
        ref = sift.get((r.size, r.threads))
        return "-" if not ref else f"{r.seconds / ref:.2f}"

    rows = [
        [
            r.method,
            r.device,
            r.size,
            f"{r.image_size[0]}x{r.image_size[1]}",
            r.threads,
            f"{r.seconds:.3f}",
            ratio(r),
            f"{r.create_seconds:.2f}",
            f"{r.first_seconds:.2f}" if r.first_seconds else "-",
            f"{r.keypoints:.0f}",
            f"{r.peak_rss_mib:.0f}",
            f"{r.base_rss_mib:.0f}",
            "-" if r.peak_gpu_mib is None else f"{r.peak_gpu_mib:.0f}",
        ]
        for r in results
    ]
    return markdown(columns, rows)
