"""Evaluation of fundus registration: FIRE, synthetic pairs, peers side by side, speed.

Modules (each one job):

- :mod:`~fundusfeat.evaluation.metrics`: FIRE's per-pair error and Registration Score.
- :mod:`~fundusfeat.evaluation.fire`: the FIRE dataset loader.
- :mod:`~fundusfeat.evaluation.synthetic`: reproducible synthetic pairs with known H.
- :mod:`~fundusfeat.evaluation.peers`: detectors by name (SIFT, CLAHE-SIFT, ORB, ...).
- :mod:`~fundusfeat.evaluation.runner`: register pairs with methods, score each pair.
- :mod:`~fundusfeat.evaluation.report` / :mod:`~fundusfeat.evaluation.plot`: tables,
  JSON and the success-curve figure.
- :mod:`~fundusfeat.evaluation.bench`: time and memory of detect + describe.
- :mod:`~fundusfeat.cli.evaluate`: ``fundusfeat evaluate`` and ``fundusfeat bench``.
"""

from fundusfeat.evaluation.fire import load_fire, read_control_points
from fundusfeat.evaluation.metrics import (
    Conventions,
    Score,
    pair_error,
    registration_score,
    score_conventions,
    success_curve,
)
from fundusfeat.evaluation.pairs import EvalPair
from fundusfeat.evaluation.peers import ClaheSift, make_detector, make_registrar
from fundusfeat.evaluation.report import MethodReport, markdown_table, summarize, to_json
from fundusfeat.evaluation.runner import PairResult, register_pair, run_evaluation
from fundusfeat.evaluation.synthetic import (
    PRESETS,
    SyntheticPair,
    SyntheticPreset,
    make_synthetic_pair,
    synthetic_pairs,
)

__all__ = [
    "PRESETS",
    "ClaheSift",
    "Conventions",
    "EvalPair",
    "MethodReport",
    "PairResult",
    "Score",
    "SyntheticPair",
    "SyntheticPreset",
    "load_fire",
    "make_detector",
    "make_registrar",
    "make_synthetic_pair",
    "markdown_table",
    "pair_error",
    "read_control_points",
    "register_pair",
    "registration_score",
    "run_evaluation",
    "score_conventions",
    "success_curve",
    "summarize",
    "synthetic_pairs",
    "to_json",
]
