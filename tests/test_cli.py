"""The fundusfeat command line: demo, register, exit codes, lazy external commands."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import fundusfeat
from fundusfeat import cli
from fundusfeat.cli import register as cli_register
from fundusfeat.geometry.transforms import homography_transform
from fundusfeat.io.demo import load_demo_pair

from .conftest import DEFAULT_MODEL

DATA = resources.files("fundusfeat") / "data"
FAST = ["--model", DEFAULT_MODEL, "--max-keypoints", "1000", "--device", "cpu"]


def _run_json(capsys, argv: list[str], options: tuple[str, ...] = tuple(FAST)) -> tuple[int, dict]:
    code = cli.main([*argv, *options, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _check_result(code: int, summary: dict, out: Path, prefix: str) -> None:
    """Exit code follows success (and, for the demo, accuracy); the figures exist; the
    report is self-consistent."""
    assert code == (0 if summary["success"] and summary.get("accurate", True) else 1)
    assert summary["success"] or summary["reason"]
    assert (out / f"{prefix}_matches.png").is_file()
    if summary["H"] is not None:
        assert (out / f"{prefix}_checkerboard.png").is_file()
        assert (out / f"{prefix}_overlay.png").is_file()
    assert summary["num_inliers"] <= summary["num_matches"]
    assert all(t >= 0 for t in summary["timings_s"].values())


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert fundusfeat.__version__ in capsys.readouterr().out


def test_demo_end_to_end(tmp_path, capsys):
    """The product's claim, unconditionally: the shipped weights register the demo pair."""
    code, summary = _run_json(capsys, ["demo", "--out", str(tmp_path)], ("--device", "cpu"))
    _check_result(code, summary, tmp_path, "fundusfeat_demo")
    assert code == 0 and summary["accurate"] is True
    assert summary["mean_corner_error_px"] < 2.0 and summary["num_inliers"] > 1000
    assert summary["transform"]["model"] == "homography"  # an exact homography pair
    assert summary["confidence"] > 0.99
    for name in ("registered", "overlay_crop"):
        assert (tmp_path / f"fundusfeat_demo_{name}.png").is_file()


@pytest.mark.parametrize(("exact", "expected"), [(True, 0), (False, 1)])
def test_demo_verdict_uses_the_true_homography(monkeypatch, tmp_path, capsys, exact, expected):
    """Known answer: the true H is 'correct' (exit 0); a shifted one is 'WRONG' (exit 1)."""
    _, _, H_true = load_demo_pair()
    H = H_true if exact else H_true + np.array([[0, 0, 30.0], [0, 0, 0], [0, 0, 0]])
    fake = fundusfeat.RegistrationResult(H, True, "ok", transform=homography_transform(H))
    monkeypatch.setattr(cli_register, "_register", lambda *_: fake)
    assert cli.main(["demo", "--out", str(tmp_path)]) == expected
    out = capsys.readouterr().out
    assert "registration: success" in out and "keypoints:" in out and "timings (s):" in out
    assert ("-> correct" in out) == exact and ("-> WRONG" in out) != exact
    assert (tmp_path / "fundusfeat_demo_overlay.png").is_file()


def test_register_demo_pair(tmp_path, capsys):
    a, b = str(DATA / "retina_a.jpg"), str(DATA / "retina_b.jpg")
    code, summary = _run_json(capsys, ["register", a, b, "--out", str(tmp_path)])
    _check_result(code, summary, tmp_path, "fundusfeat_register")


def test_register_unreadable_file_exits_2(tmp_path, capsys):
    text = tmp_path / "not_an_image.jpg"
    text.write_text("hello")
    for path in (tmp_path / "missing.jpg", text):
        assert cli.main(["register", str(path), str(path), "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "cannot read image" in err and path.name in err


@pytest.mark.parametrize(
    "argv", [["register"], ["demo", "--model", "nope"], ["demo", "--max-keypoints", "0"]]
)
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().out


def _external(monkeypatch, tmp_path, source: str) -> None:
    """Install a throwaway module as the only external command, named ``fake``."""
    (tmp_path / "ff_fake_cmd.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ff_fake_cmd", raising=False)
    command = cli.Command("fake", "ff_fake_cmd", "add_fake_parser", "a fake command")
    monkeypatch.setattr(cli, "COMMANDS", (command,))


def test_external_command_is_wired_and_lazy(monkeypatch, tmp_path, capsys):
    source = (
        "def add_fake_parser(subparsers):\n"
        "    p = subparsers.add_parser('fake')\n"
        "    p.add_argument('--n', type=int, default=3)\n"
        "    p.set_defaults(func=lambda args: args.n)\n"
    )
    _external(monkeypatch, tmp_path, source)
    cli.build_parser("demo")
    assert "ff_fake_cmd" not in sys.modules  # not imported unless run
    assert cli.main(["fake", "--n", "7"]) == 7
    cli.main([])
    assert "a fake command" in capsys.readouterr().out


def test_missing_fundusfeat_module_disables_only_its_command(monkeypatch, capsys):
    command = cli.Command("fake", "fundusfeat.no_such_module", "add_fake_parser", "x")
    monkeypatch.setattr(cli, "COMMANDS", (command,))
    assert cli.main(["fake", "--anything"]) == 2
    assert "not available" in capsys.readouterr().err


def test_broken_dependency_is_not_hidden(monkeypatch, tmp_path):
    _external(monkeypatch, tmp_path, "import ff_no_such_dependency\n")
    with pytest.raises(ModuleNotFoundError, match="ff_no_such_dependency"):
        cli.main(["fake"])


def test_register_without_out_writes_no_figures(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = str(DATA / "retina_a.jpg"), str(DATA / "retina_b.jpg")
    code, summary = _run_json(capsys, ["register", a, b])
    assert code == 0 and summary["figures"] == []
    assert list(tmp_path.iterdir()) == []
