"""The training loop: Adam, gradient accumulation, AMP on CUDA, checkpoints, resume, DDP.

One process trains on one device. Under ``torchrun`` (``WORLD_SIZE`` set) each
process joins a ``torch.distributed`` group (NCCL on CUDA, gloo on CPU), wraps the
network in ``DistributedDataParallel`` and draws its own pairs (seed + rank);
rank 0 writes checkpoints and logs.

Checkpoints (``torch.save`` of a dict that loads with ``weights_only=True``) hold
``model``, ``state_dict``, ``optimizer``, ``step``, ``pairs_seen``, ``train_seconds``,
``hardware`` (seconds per device description), ``config`` and the random states;
:func:`fundusfeat.features.checkpoint.load_network` reads them directly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fundusfeat.features import models
from fundusfeat.features.checkpoint import load_state_dict
from fundusfeat.features.hardware import cpu_has_native_bf16, hardware_name, resolve_device
from fundusfeat.features.network import fold_for_inference
from fundusfeat.io.images import expand_image_args
from fundusfeat.training.config import TrainConfig
from fundusfeat.training.objective import batch_loss
from fundusfeat.training.pairs import PairBatch, PairSampler, load_train_image
from fundusfeat.training.validation import validate

logger = logging.getLogger(__name__)

StepReport = Callable[[dict[str, Any]], None]
"""Called with each logged step's values (loss terms, learning rate, seconds)."""


@dataclass
class TrainState:
    """Counters that accumulate over resumed runs."""

    step: int = 0
    pairs_seen: int = 0
    train_seconds: float = 0.0
    hardware: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def _init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group when launched by torchrun; returns (rank, world_size)."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


class Trainer:
    """Trains a network of :mod:`fundusfeat.features.network` from a :class:`TrainConfig`.

    Args:
        cfg: the frozen configuration.
        resume: a checkpoint to continue from (network, optimiser, counters, random
            states), or None to start from He-initialised weights.
    """

    def __init__(self, cfg: TrainConfig, resume: str | Path | None = None) -> None:
        self.cfg = cfg
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        self.device = resolve_device(cfg.run.device)
        self.rank, self.world = _init_distributed(self.device)
        torch.manual_seed(cfg.run.seed + self.rank)
        self.net = models.get(cfg.model.name).build(cfg.model.dim).to(self.device)
        self.net = self.net.to(memory_format=torch.channels_last)
        self.teacher = self._make_teacher(cfg.model.teacher)
        self.frozen = self._freeze(cfg.model.freeze)
        self.optimizer = torch.optim.Adam(
            [p for p in self.net.parameters() if p.requires_grad],
            lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay,
        )
        self.near_rng = torch.Generator().manual_seed(cfg.run.seed + 7919 * (self.rank + 1))
        self.amp = cfg.run.amp and (self.device.type == "cuda" or cpu_has_native_bf16())
        self.state = TrainState()
        self.sampler = self._make_sampler(cfg.data.train_list, cfg.run.seed + 1000 * self.rank)
        self.val_batches = self._make_val_batches()
        if resume is not None:
            self._load(Path(resume))
        elif cfg.model.init_from:
            sources = cfg.model.init_from
            for source in (sources,) if isinstance(sources, str) else sources:
                self._init_from(Path(source))
        self.model: nn.Module = self.net
        if self.world > 1 or dist.is_initialized():
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        self.out_dir = Path(cfg.run.out_dir)

    def _make_teacher(self, name: str) -> nn.Module | None:
        """The frozen teacher of the distillation (shipped weights, eval mode), or None."""
        if not name:
            return None
        found, state = load_state_dict("default", name)
        net = models.get(found).build(self.cfg.model.dim)
        net.load_state_dict(state)
        net = fold_for_inference(net).to(self.device).to(memory_format=torch.channels_last)
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def _freeze(self, names: tuple[str, ...]) -> list[nn.Module]:
        """The top-level modules ``names``, their parameters' gradients turned off."""
        children = dict(self.net.named_children())
        unknown = sorted(set(names) - set(children))
        if unknown:
            raise ValueError(
                f"model.freeze: {self.cfg.model.name!r} has no module(s) {unknown}; "
                f"its modules: {sorted(children)}"
            )
        frozen = [children[n] for n in names]
        for module in frozen:
            module.requires_grad_(False)
        if not any(p.requires_grad for p in self.net.parameters()):
            raise ValueError("model.freeze leaves no parameter to train")
        return frozen

    def _train_mode(self) -> None:
        """Train mode, except the frozen modules (their BatchNorm statistics stay fixed)."""
        self.model.train()
        for module in self.frozen:
            module.eval()

    # ------------------------------------------------------------------ data
    def _make_sampler(self, images: str, seed: int) -> PairSampler:
        d = self.cfg.data
        paths = expand_image_args([images])
        loaded = [load_train_image(p, d.target_diameter) for p in paths]
        return PairSampler(
            loaded,
            crop=d.crop,
            scale_range=d.scale_range,
            min_fov_fraction=d.min_fov_fraction,
            min_overlap=d.min_overlap,
            warp=self.cfg.warp,
            photo=self.cfg.photo,
            seed=seed,
        )

    def _make_val_batches(self) -> list[PairBatch]:
        """Fixed validation pairs from the held-back images (a seed stream of their own)."""
        cfg = self.cfg
        if not cfg.data.val_list or cfg.run.val_every <= 0 or self.rank != 0:
            return []
        sampler = self._make_sampler(cfg.data.val_list, seed=10_000_019 + cfg.run.seed)
        n = cfg.run.val_pairs
        size = cfg.optim.micro_batch
        return [sampler.batch(min(size, n - i)) for i in range(0, n, size)]

    # ------------------------------------------------------------ checkpoints
    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint dict of the current state (see module docstring)."""
        s = self.state
        return {
            "model": self.cfg.model.name,
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "step": s.step,
            "pairs_seen": s.pairs_seen,
            "train_seconds": s.train_seconds,
            "hardware": dict(s.hardware),
            "history": json.dumps(s.history),
            "config": json.dumps(self.cfg.to_dict()),
            "sampler_state": json.dumps(self.sampler.rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
            "near_rng": self.near_rng.get_state(),
        }

    def save(self, path: Path) -> None:
        """Write the checkpoint atomically (rank 0 only)."""
        if self.rank != 0:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.checkpoint(), tmp)
        os.replace(tmp, path)

    def _load(self, path: Path) -> None:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("model") != self.cfg.model.name:
            raise ValueError(
                f"resume checkpoint is a {ckpt.get('model')!r} network, config says "
                f"{self.cfg.model.name!r}"
            )
        self.net.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state = TrainState(
            step=int(ckpt["step"]),
            pairs_seen=int(ckpt["pairs_seen"]),
            train_seconds=float(ckpt["train_seconds"]),
            hardware=dict(ckpt.get("hardware", {})),
            history=json.loads(ckpt.get("history", "[]")),
        )
        if self.world == 1:  # same stream continues; other ranks keep their fresh seeds
            self.sampler.rng.bit_generator.state = json.loads(ckpt["sampler_state"])
            torch.set_rng_state(ckpt["torch_rng"])
            if "near_rng" in ckpt:
                self.near_rng.set_state(ckpt["near_rng"])
        logger.info("resumed from %s at step %d", path, self.state.step)

    def _init_from(self, path: Path) -> None:
        """Copy every tensor of ``path`` whose name and shape match into the network."""
        if not path.is_file():
            raise FileNotFoundError(f"model.init_from: no such checkpoint: {path}")
        obj = torch.load(path, map_location="cpu", weights_only=True)
        source = obj.get("state_dict", obj) if isinstance(obj, dict) else {}
        own = self.net.state_dict()
        taken = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
        self.net.load_state_dict(taken, strict=False)
        logger.info(
            "initialised %d of %d tensors from %s (new: %s)",
            len(taken),
            len(own),
            path,
            ", ".join(sorted({k.split(".")[0] for k in own if k not in taken})) or "none",
        )

    # ----------------------------------------------------------------- steps
    def _offset(self) -> tuple[float, float]:
        g = self.cfg.loss.grid_step
        x, y = self.sampler.rng.uniform(0, g, size=2)
        return float(x), float(y)

    def train_step(self) -> dict[str, float]:
        """One optimiser step over ``batch_pairs`` pairs (accumulated micro-batches)."""
        cfg = self.cfg
        self._train_mode()
        lr = cfg.optim.lr_at(self.state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        chunks = cfg.optim.batch_pairs // cfg.optim.micro_batch
        totals: dict[str, float] = {}
        for _ in range(chunks):
            batch = self.sampler.batch(cfg.optim.micro_batch).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss, terms = batch_loss(
                    self.model, batch, cfg.loss, self._offset(), self.near_rng, self.teacher
                )
            (loss / chunks).backward()
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + v / chunks
        if not all(math.isfinite(p.grad.sum().item()) for p in self._grads()):
            logger.warning("non-finite gradient at step %d: step skipped", self.state.step)
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.step()
        self.state.step += 1
        self.state.pairs_seen += cfg.optim.batch_pairs * self.world
        totals["lr"] = lr
        return totals

    def _grads(self) -> list[torch.Tensor]:
        return [p for p in self.net.parameters() if p.grad is not None]

    def fit(self, progress: StepReport | None = None) -> TrainState:
        """Train until ``run.steps`` (or ``run.max_minutes``); checkpoint on the way.

        Args:
            progress: called every ``log_every`` steps (and after validation) with a
                dict of step, pairs_seen, pairs_per_s, the loss terms and validation
                metrics.

        Returns:
            The final counters. ``out_dir/last.pt`` holds the final checkpoint.
        """
        cfg = self.cfg.run
        start = time.perf_counter()
        hw = hardware_name(self.device)
        window_start, window_pairs = start, 0
        last = self.out_dir / "last.pt"
        while self.state.step < cfg.steps:
            t0 = time.perf_counter()
            terms = self.train_step()
            dt = time.perf_counter() - t0
            self.state.train_seconds += dt
            self.state.hardware[hw] = self.state.hardware.get(hw, 0.0) + dt
            window_pairs += self.cfg.optim.batch_pairs * self.world
            step = self.state.step
            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                info = {"step": step, "pairs_seen": self.state.pairs_seen, **terms}
                info["pairs_per_s"] = window_pairs / max(now - window_start, 1e-9)
                window_start, window_pairs = now, 0
                self._report(info, progress)
            if cfg.val_every > 0 and step % cfg.val_every == 0 and self.val_batches:
                metrics = validate(
                    self.net, self.val_batches, self.cfg.loss, self.device, self.teacher
                )
                self._report(
                    {"step": step, **{f"val_{k}": v for k, v in metrics.items()}}, progress
                )
            timed_out = cfg.max_minutes > 0 and time.perf_counter() - start > cfg.max_minutes * 60
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or timed_out:
                self.save(last)
            if timed_out:
                logger.info("time limit of %.1f min reached at step %d", cfg.max_minutes, step)
                break
        self.save(last)
        return self.state

    def _report(self, info: dict[str, Any], progress: StepReport | None) -> None:
        if self.rank != 0:
            return
        self.state.history.append({k: float(v) for k, v in info.items()})
        logger.info(" ".join(f"{k}={v:.4g}" for k, v in info.items()))
        if progress is not None:
            progress(info)
