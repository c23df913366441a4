"""Turn a trainer checkpoint into shippable package weights.

``python -m fundusfeat.training.export_weights runs/fast/last.pt`` writes the bare
state dict to the model's weights file in ``fundusfeat/weights`` (its registry entry's
``weights``, else ``<model>_fundus.pt``) and prints its sha256 (to put in that entry of
:data:`fundusfeat.features.models.MODELS`) and the training counters (for the model card).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from fundusfeat.features import models
from fundusfeat.features.checkpoint import file_sha256, load_state_dict, read_weights_file


def export_weights(checkpoint: str | Path, out_dir: str | Path) -> tuple[Path, str, dict]:
    """Write the checkpoint's state dict as ``<out_dir>/<model file>``.

    Returns:
        (path written, its sha256, the checkpoint's counters: step, pairs_seen,
        train_seconds, hardware).
    """
    model, state = load_state_dict(checkpoint)
    ckpt = read_weights_file(checkpoint)
    counters = {
        k: ckpt[k] for k in ("step", "pairs_seen", "train_seconds", "hardware") if k in ckpt
    }
    path = Path(out_dir) / (models.get(model).weights or f"{model}_fundus.pt")
    torch.save({k: v.contiguous() for k, v in state.items()}, path)
    return path, file_sha256(path), counters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "weights"))
    args = parser.parse_args(argv)
    path, digest, counters = export_weights(args.checkpoint, args.out_dir)
    print(f"wrote {path}\nsha256 {digest}")
    for k, v in counters.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
