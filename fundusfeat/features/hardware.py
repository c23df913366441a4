"""The machine: CPU model and features, and the torch device to run on.

One home for what the detector, the matcher, the trainer and the benchmarks need to
know about the hardware (``/proc/cpuinfo`` is parsed here only).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

_CPUINFO = Path("/proc/cpuinfo")
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=1)
def _cpuinfo_first_block() -> dict[str, str]:
    """``key: value`` of the first processor in ``/proc/cpuinfo`` ({} elsewhere)."""
    try:
        text = _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` reports."""
    return _cpuinfo_first_block().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where there is none)."""
    return frozenset(_cpuinfo_first_block().get("flags", "").split())


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX).

    Elsewhere torch emulates bfloat16 on the CPU, slower than float32.
    """
    return bool(cpu_flags() & _NATIVE_BF16_FLAGS)


def resolve_device(device: torch.device | str | None, name: str = "device") -> torch.device:
    """The torch device to use.

    Args:
        device: None or ``"auto"`` (CUDA when available, else the CPU), a device string
            (``"cpu"``, ``"cuda"``, ``"cuda:1"``) or a ``torch.device``.
        name: the argument name used in error messages.

    Raises:
        TypeError: ``device`` is not a string, a ``torch.device`` or None.
        ValueError: an unknown device string, or CUDA asked for but not available.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be a str, torch.device or None, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{name}: not a torch device: {device!r} ({err})") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} {str(device)!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be a CPU or CUDA device, got {str(device)!r}")
    return dev


def hardware_name(device: torch.device) -> str:
    """A short description of what computes on ``device`` (GPU name or CPU + threads)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {cpu_model()}, {torch.get_num_threads()} threads"
