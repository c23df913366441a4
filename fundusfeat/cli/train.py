"""``fundusfeat train``: command-line entry of the trainer."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import Any

_OVERRIDES = (  # (flag, section, key, type)
    ("--steps", "run", "steps", int),
    ("--max-minutes", "run", "max_minutes", float),
    ("--threads", "run", "threads", int),
    ("--device", "run", "device", str),
    ("--out-dir", "run", "out_dir", str),
    ("--seed", "run", "seed", int),
)


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train the network from images (self-supervised pairs)",
        description="Train a fundusfeat network from a TOML config "
        "(see training/README.md). Checkpoints go to run.out_dir/last.pt.",
    )
    p.add_argument("--config", required=True, help="TOML config, e.g. training/configs/fast.toml")
    p.add_argument("--resume", default=None, help="checkpoint to continue from")
    for flag, section, key, typ in _OVERRIDES:
        p.add_argument(flag, type=typ, default=None, help=f"override [{section}] {key}")
    p.set_defaults(func=run_train)
    return p


def _print_progress(info: dict[str, Any]) -> None:
    parts = [f"step {info['step']}"]
    for k, v in info.items():
        if k != "step":
            parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    print(" | ".join(parts), file=sys.stderr, flush=True)


def run_train(args: argparse.Namespace) -> int:
    """Run the trainer; returns the exit code."""
    from fundusfeat.training.config import load_config
    from fundusfeat.training.trainer import Trainer

    logging.basicConfig(level=logging.WARNING)
    try:
        cfg = load_config(args.config)
        for flag, section, key, _ in _OVERRIDES:
            value = getattr(args, flag.lstrip("-").replace("-", "_"))
            if value is not None:
                part = dataclasses.replace(getattr(cfg, section), **{key: value})
                cfg = dataclasses.replace(cfg, **{section: part})
        trainer = Trainer(cfg, resume=args.resume)
    except (FileNotFoundError, ValueError) as err:
        print(f"fundusfeat train: {err}", file=sys.stderr)
        return 2
    state = trainer.fit(progress=_print_progress)
    print(
        f"done: step {state.step}, {state.pairs_seen} pairs, "
        f"{state.train_seconds / 3600:.2f} h of training; checkpoint "
        f"{trainer.out_dir / 'last.pt'}"
    )
    return 0
