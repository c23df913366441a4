"""evaluation.changes_bench: lesion pairs and controls scored per variant and method; the
calibration picks a grid point within the false-alarm bounds; CLI arguments."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fundusfeat.cli import main
from fundusfeat.evaluation import changes_bench
from fundusfeat.pipeline.changes import ChangeParams

from .conftest import PACKAGE_DATA

SOURCE = PACKAGE_DATA / "retina_a.jpg"
VARIANTS = ("as-taken", "red-clipped")


@pytest.fixture(scope="module")
def small(detector):
    methods = changes_bench.default_methods()
    methods["strict"] = replace(ChangeParams(), high=50.0, low=40.0)  # finds nothing
    return changes_bench.run_changes_benchmark(
        [SOURCE], num_pairs=1, methods=methods, detector=detector, variants=VARIANTS
    )


def test_outcomes_per_pair_variant_and_method(small):
    outs = small.outcomes
    assert len(outs) == 2 * 2 * 3  # lesion + control, 2 variants, 3 methods
    lesion = [o for o in outs if not o.control]
    assert all(3 <= len(o.kinds) <= 6 and len(o.found) == len(o.kinds) for o in lesion)
    assert all(o.registered for o in outs)
    strict = changes_bench.summarize([o for o in outs if o.method == "strict"])
    assert strict.found == 0 and strict.regions == 0 and strict.control_regions == 0
    ours = changes_bench.summarize(
        [o for o in outs if o.method == "fundusfeat" and o.variant == "as-taken"]
    )
    assert ours.found >= 1 and ours.per_control == 0.0
    assert sum(ours.by_kind[k][1] for k in ours.by_kind) == ours.lesions
    assert sum(n for _, n in ours.by_size) == ours.lesions and ours.seconds > 0


def test_report_and_json(small):
    text = changes_bench.markdown_report(small)
    assert "| as-taken | fundusfeat |" in text and "| red-clipped | plain |" in text
    data = json.loads(json.dumps(changes_bench.to_json(small)))
    assert len(data["summaries"]) == 6 and data["meta"]["pairs"] == 1


def test_calibration_prefers_recall_within_bounds(small):
    grid = {"fundusfeat": ChangeParams(), "strict": replace(ChangeParams(), high=50.0, low=40.0)}
    best, rows = changes_bench.calibrate(small, grid)
    assert len(rows) == 2 and best == "fundusfeat"
    assert len(changes_bench.grid_params()) >= 20


def test_variants_change_the_visits_as_named(retina):
    a, b = retina, retina.copy()
    for name, make in changes_bench.VARIANTS.items():
        va, vb = make(a, b)
        assert va.shape == a.shape and vb.shape == b.shape and va.dtype == vb.dtype == a.dtype
        if name == "as-taken":
            assert va is a and vb is b
        elif name == "red-clipped":
            assert (va[..., 2] >= a[..., 2]).all() and (va[..., :2] == a[..., :2]).all()
        else:
            assert va is a and not (vb == b).all()
            brighter = vb.astype(int).sum() > b.astype(int).sum()
            assert brighter == (name == "halo")


def test_cli_bad_variant_exits_2(capsys):
    assert main(["evaluate", "--changes", str(SOURCE), "--variants", "blue", "--quiet"]) == 2
    assert "blue" in capsys.readouterr().err
