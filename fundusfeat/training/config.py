"""Training configuration: frozen, validated dataclasses read from a TOML file.

A config file has the sections ``[model]``, ``[data]``, ``[warp]``, ``[photo]``,
``[loss]``, ``[optim]`` and ``[run]``; every key is optional and falls back to the
defaults below. Unknown sections or keys are errors (a typo must not silently
train with a default). Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fundusfeat.features import models
from fundusfeat.training.warps import PhotoRange, WarpRange

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DESCRIPTOR_LOSSES = ("ap", "infonce")


@dataclass(frozen=True)
class ModelConfig:
    """Which network to train and where its first weights come from.

    Attributes:
        name: a model of :mod:`fundusfeat.features.network` (``"fast"``, ``"r2d2"``, ...).
        dim: descriptor size.
        init_from: a checkpoint or state dict whose tensors initialise every parameter
            and buffer of the same name and shape (the rest keeps He initialisation);
            "" = none; or a list of them, applied in order (a later file overwrites the
            tensors it shares with an earlier one). Used to start a new architecture from
            trained ones; ignored when resuming. A relative path follows the config file.
        teacher: a model whose shipped weights are trained (e.g. ``"fast"``): its
            outputs on every training image are the targets of the distillation loss
            (``loss.distill_weight``); "" = none.
        freeze: names of the network's top-level modules (e.g. ``["stem", "enc4"]``)
            that are not trained: their parameters keep their initial values (from
            ``init_from``) and their BatchNorm statistics stay fixed (eval mode).
    """

    name: str = "fast"
    dim: int = 128
    init_from: str | tuple[str, ...] = ""
    teacher: str = ""
    freeze: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how pairs are cut from them.

    Attributes:
        train_list: a .txt file listing training images (one path per line, relative
            to the list's folder), a folder, or an image file.
        val_list: the same for the held-back validation images ("" for none).
        crop: side of the square crops (pixels at the working scale).
        scale_range: (min, max) global rescale of the working-scale image.
        min_fov_fraction: a crop must have at least this fraction inside the FOV.
        min_overlap: at least this fraction of crop 1 must land inside crop 2's FOV.
        target_diameter: FOV diameter (pixels) of the working scale.
    """

    train_list: str = ""
    val_list: str = ""
    crop: int = 192
    scale_range: tuple[float, float] = (1.0 / 3.0, 1.0)
    min_fov_fraction: float = 0.7
    min_overlap: float = 0.5
    target_diameter: float = 750.0


@dataclass(frozen=True)
class LossConfig:
    """Loss terms.

    Attributes:
        descriptor: ``"ap"`` (the paper's AP loss with reliability) or ``"infonce"``.
        pair_weight: weight of the self-supervised pair losses (descriptor, repeatability,
            localisation) in the total; 0 with a teacher = pure distillation.
        distill_weight: weight of the distillation loss (the teacher's repeatability,
            reliability and descriptors, :func:`~fundusfeat.training.losses.distillation_terms`),
            added to the rest; 0 = off (needs ``model.teacher`` when on).
        distill_peak_weight: the repeatability term weighs a pixel ``1 + this x`` the
            teacher's repeatability there (its peaks are the keypoints).
        distill_desc_weight: weight of the descriptor term (``1 - cos``) against the two
            cross-entropies (at 1, their gradients leave the student's descriptors
            orthogonal to the teacher's: cos 0.01 after 60 steps, 0.13 after 32 steps
            of the descriptor term alone).
        k: the reliability margin of ``1 - AP * R - k (1 - R)`` (paper: 0.5; AP loss
            only: with InfoNCE the reliability is fitted to the match probability by
            binary cross-entropy).
        window: repeatability window N (paper: 16).
        cosim_centered: centre each window before the cosine similarity (see
            :func:`fundusfeat.training.losses.cosim_loss`; paper: false).
        peaky_weight: weight of the peakiness terms (paper: 0.5 each image).
        rep_weight: weight of the whole repeatability loss.
        grid_step: spacing (pixels) of the sampled query points.
        temperature: InfoNCE softmax temperature.
        ap_bins: number of histogram bins of the differentiable AP.
        ap_neg_radius: candidates closer than this to the true match (pixels) are
            left out of the ranking (AP and InfoNCE).
        near_negatives: extra InfoNCE candidates per query drawn close to its true
            match (InfoNCE only), so that descriptors tell apart points a few pixels
            apart, not only the points of the ``grid_step`` grid.
        near_radius: (min, max) distance in pixels of those close negatives.
        loc_weight: weight of the sub-pixel localisation loss
            (:func:`fundusfeat.training.losses.localization_loss`; 0 = off): the
            soft-argmax of each ``loc_window`` window of image 1's repeatability must
            land where image 2's lands, both in image 1's frame at sub-pixel positions.
        loc_window: side of those windows (pixels).
        loc_temperature: softmax temperature of the soft-argmax (repeatability units).
    """

    descriptor: str = "infonce"
    pair_weight: float = 1.0
    distill_weight: float = 0.0
    distill_peak_weight: float = 4.0
    distill_desc_weight: float = 10.0
    k: float = 0.5
    window: int = 16
    cosim_centered: bool = False
    peaky_weight: float = 0.5
    rep_weight: float = 1.0
    grid_step: int = 8
    temperature: float = 0.05
    ap_bins: int = 25
    ap_neg_radius: float = 0.0
    near_negatives: int = 0
    near_radius: tuple[float, float] = (2.0, 6.0)
    loc_weight: float = 0.0
    loc_window: int = 8
    loc_temperature: float = 0.1


@dataclass(frozen=True)
class OptimConfig:
    """Adam settings; ``micro_batch`` < ``batch_pairs`` accumulates gradients.

    The learning rate is ``lr * lr_gamma ** k`` where ``k`` is the number of
    ``lr_milestones`` (optimiser steps) already reached, as in
    ``torch.optim.lr_scheduler.MultiStepLR``; it is a function of the step count, so a
    resumed run follows the same schedule, and the config (not the checkpoint) decides it.
    """

    lr: float = 1e-4
    weight_decay: float = 5e-4
    batch_pairs: int = 8
    micro_batch: int = 8
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based)."""
        return self.lr * self.lr_gamma ** sum(step >= m for m in self.lr_milestones)


@dataclass(frozen=True)
class RunConfig:
    """Length, seeds, checkpoints and validation of a run.

    Attributes:
        steps: total optimiser steps (a resumed run continues up to this number).
        max_minutes: stop (after a checkpoint) when this much wall time has passed
            in this process (0 = no limit).
        seed: the root seed of every random stream of the run.
        out_dir: where checkpoints and the log go.
        checkpoint_every: steps between checkpoints.
        val_every: steps between validations (0 = never).
        val_pairs: synthetic pairs of the validation.
        log_every: steps between progress lines.
        threads: torch intra-op threads on CPU (0 = leave torch's default).
        device: "auto", "cpu", "cuda" or "cuda:N".
        amp: bfloat16 autocast on CUDA, and on a CPU with native bfloat16 (AVX512-BF16
            or AMX; elsewhere the CPU emulates it slower than float32, so it stays off).
    """

    steps: int = 1000
    max_minutes: float = 0.0
    seed: int = 0
    out_dir: str = "runs/train"
    checkpoint_every: int = 200
    val_every: int = 0
    val_pairs: int = 8
    log_every: int = 20
    threads: int = 0
    device: str = "auto"
    amp: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """The whole training configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    warp: WarpRange = field(default_factory=WarpRange)
    photo: PhotoRange = field(default_factory=PhotoRange)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists): what checkpoints store."""
        return _listify(dataclasses.asdict(self))


def _listify(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _listify(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_listify(v) for v in obj]
    return obj


def _validate(cfg: TrainConfig) -> None:
    checks = [
        (cfg.model.name in models.names(), f"model.name must be one of {models.names()}"),
        (cfg.model.dim > 0, "model.dim must be positive"),
        (cfg.data.crop >= 32, "data.crop must be >= 32"),
        (
            0 < cfg.data.scale_range[0] <= cfg.data.scale_range[1],
            "data.scale_range: 0 < min <= max",
        ),
        (0 <= cfg.data.min_fov_fraction <= 1, "data.min_fov_fraction must be in [0, 1]"),
        (0 <= cfg.data.min_overlap <= 1, "data.min_overlap must be in [0, 1]"),
        (cfg.loss.descriptor in DESCRIPTOR_LOSSES, f"loss.descriptor: one of {DESCRIPTOR_LOSSES}"),
        (cfg.loss.window >= 2, "loss.window must be >= 2"),
        (cfg.loss.distill_weight >= 0, "loss.distill_weight must be >= 0"),
        (cfg.loss.pair_weight >= 0, "loss.pair_weight must be >= 0"),
        (
            cfg.loss.pair_weight > 0 or cfg.loss.distill_weight > 0,
            "loss.pair_weight and loss.distill_weight cannot both be 0",
        ),
        (cfg.loss.distill_peak_weight >= 0, "loss.distill_peak_weight must be >= 0"),
        (cfg.loss.distill_desc_weight >= 0, "loss.distill_desc_weight must be >= 0"),
        (
            cfg.loss.distill_weight == 0 or bool(cfg.model.teacher),
            "loss.distill_weight needs model.teacher",
        ),
        (
            not cfg.model.teacher
            or (cfg.model.teacher in models.names() and models.get(cfg.model.teacher).trained),
            "model.teacher must be a model with trained shipped weights "
            f"({[n for n in models.names() if models.get(n).trained]})",
        ),
        (
            all(isinstance(n, str) and n for n in cfg.model.freeze),
            "model.freeze must be a list of module names",
        ),
        (
            isinstance(cfg.model.init_from, str)
            or all(isinstance(p, str) and p for p in cfg.model.init_from),
            "model.init_from must be a path or a list of paths",
        ),
        (cfg.loss.grid_step >= 1, "loss.grid_step must be >= 1"),
        (cfg.loss.temperature > 0, "loss.temperature must be positive"),
        (cfg.loss.ap_bins >= 2, "loss.ap_bins must be >= 2"),
        (cfg.loss.near_negatives >= 0, "loss.near_negatives must be >= 0"),
        (
            0 < cfg.loss.near_radius[0] <= cfg.loss.near_radius[1],
            "loss.near_radius: 0 < min <= max",
        ),
        (cfg.loss.loc_weight >= 0, "loss.loc_weight must be >= 0"),
        (cfg.loss.loc_window >= 2, "loss.loc_window must be >= 2"),
        (cfg.loss.loc_temperature > 0, "loss.loc_temperature must be positive"),
        (cfg.optim.lr > 0, "optim.lr must be positive"),
        (0 < cfg.optim.lr_gamma <= 1, "optim.lr_gamma must be in (0, 1]"),
        (
            all(m >= 1 for m in cfg.optim.lr_milestones)
            and list(cfg.optim.lr_milestones) == sorted(set(cfg.optim.lr_milestones)),
            "optim.lr_milestones: increasing positive steps",
        ),
        (cfg.optim.batch_pairs >= 1, "optim.batch_pairs must be >= 1"),
        (
            1 <= cfg.optim.micro_batch <= cfg.optim.batch_pairs
            and cfg.optim.batch_pairs % cfg.optim.micro_batch == 0,
            "optim.micro_batch must divide optim.batch_pairs",
        ),
        (cfg.run.steps >= 1, "run.steps must be >= 1"),
        (cfg.run.checkpoint_every >= 1, "run.checkpoint_every must be >= 1"),
        (cfg.run.log_every >= 1, "run.log_every must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"invalid training config: {message}")


_SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "warp": WarpRange,
    "photo": PhotoRange,
    "loss": LossConfig,
    "optim": OptimConfig,
    "run": RunConfig,
}
_PATH_KEYS = {("data", "train_list"), ("data", "val_list"), ("model", "init_from")}


def config_from_dict(raw: dict[str, Any], base_dir: Path | None = None) -> TrainConfig:
    """Build a validated config from a nested dict (as read from TOML).

    Args:
        raw: ``{section: {key: value}}``.
        base_dir: folder that relative paths are resolved against (None: keep as is).

    Raises:
        ValueError: unknown section or key, or a value out of range.
    """
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ValueError(f"unknown config section(s) {sorted(unknown)}; known: {sorted(_SECTIONS)}")
    parts = {}
    for name, cls in _SECTIONS.items():
        section = dict(raw.get(name, {}))
        names = {f.name: f for f in dataclasses.fields(cls)}
        bad = set(section) - set(names)
        if bad:
            raise ValueError(f"unknown key(s) {sorted(bad)} in [{name}]; known: {sorted(names)}")
        for key, value in section.items():
            if isinstance(value, list):
                section[key] = tuple(value)
            if base_dir is not None and (name, key) in _PATH_KEYS and value:
                value = section[key]
                if isinstance(value, tuple):
                    section[key] = tuple(str((base_dir / v).resolve()) for v in value)
                else:
                    section[key] = str((base_dir / value).resolve())
        parts[name] = cls(**section)
    return TrainConfig(**parts)


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a TOML training config; relative paths follow the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with path.open("rb") as f:
        raw = tomllib.load(f)
    return config_from_dict(raw, base_dir=path.parent)
