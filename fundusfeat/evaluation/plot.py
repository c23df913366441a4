"""Success-versus-threshold figure (needs the optional ``plot`` extra: matplotlib)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fundusfeat.evaluation.metrics import MAX_THRESHOLD, success_curve
from fundusfeat.evaluation.report import MethodReport

logger = logging.getLogger(__name__)


def plot_success(reports: Sequence[MethodReport], path: str | Path, title: str = "") -> bool:
    """Write the success curves (fraction of pairs with error <= t, t in 0..25 px) as PNG.

    Args:
        reports: one curve per method; the legend shows the pooled AUC.
        path: output ``.png`` file.
        title: figure title.

    Returns:
        True if written, False if matplotlib is not installed (logged as a warning).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install fundusfeat[plot]): no %s", path)
        return False
    thresholds = np.linspace(0.0, MAX_THRESHOLD, 501)
    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=150)
    for rep in reports:
        curve = success_curve(rep.errors, thresholds)
        label = f"{rep.method} (AUC {rep.scores.pooled.auc:.3f})"
        ax.step(thresholds, curve, where="post", label=label)
    ax.set_xlim(0.0, MAX_THRESHOLD)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("threshold on mean control-point error (px)")
    ax.set_ylabel("fraction of pairs registered")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(Path(path))
    plt.close(fig)
    return True
