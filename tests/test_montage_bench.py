"""evaluation.montage_bench and ``fundusfeat evaluate --montage``: every row scored on a
small set of the embedded photograph, the report and JSON, bad arguments."""

from __future__ import annotations

import json

import pytest

from fundusfeat.cli import main
from fundusfeat.evaluation import montage_bench

from .conftest import PACKAGE_DATA

SOURCE = PACKAGE_DATA / "retina_a.jpg"


@pytest.fixture(scope="module")
def small(detector):
    return montage_bench.run_montage_benchmark(
        [SOURCE],
        layouts=["cross5"],
        size=512,
        methods=("montage", "tree", "stitcher"),
        detector=detector,
    )


@pytest.mark.slow
def test_rows_scored(small):
    rows = {r.method: r for r in small.results}
    assert set(rows) == {"montage", "tree", "stitcher"}
    mont = rows["montage"]
    assert mont.fields == mont.placed == 5 and len(mont.errors) >= 8
    assert max(mont.errors.values()) < 2.0  # field px at 512 px
    assert all(r.seconds > 0 for r in small.results)
    assert mont.seam is not None and mont.seam_raw is not None  # seam step ratios measured
    assert mont.seam < 3.0 and rows["tree"].seam is None
    assert len(small.impostors) == 1 and small.impostors[0].unplaced
    assert small.impostors[0].others_placed == 5


@pytest.mark.slow
def test_report_and_json(small):
    text = montage_bench.markdown_report(small)
    assert "| montage | 1 | 5/5 |" in text and "Impostor test" in text
    data = json.loads(json.dumps(montage_bench.to_json(small)))  # strict JSON (no inf)
    assert {r["method"] for r in data["results"]} == {"montage", "tree", "stitcher"}
    assert data["meta"]["size"] == 512


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown"):
        montage_bench.run_montage_benchmark([SOURCE], layouts=["ring"], detector=object())
    with pytest.raises(ValueError, match="no source"):
        montage_bench.run_montage_benchmark([], detector=object())


def test_cli_bad_layout_exits_2(capsys):
    assert main(["evaluate", "--montage", str(SOURCE), "--layouts", "ring", "--quiet"]) == 2
    assert "ring" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_writes_tables_and_figures(tmp_path, capsys):
    out = tmp_path / "m"
    argv = [
        "evaluate",
        "--montage",
        str(SOURCE),
        "--layouts",
        "cross5",
        "--montage-size",
        "512",
        "--quiet",
        "--figure",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "| montage |" in capsys.readouterr().out
    for name in ("montage.md", "montage.json", "montage.jpg", "field_graph.png"):
        assert (out / name).stat().st_size > 0
