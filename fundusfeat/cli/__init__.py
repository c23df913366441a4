"""The ``fundusfeat`` command line: one entry point, one module per command group.

``demo | register`` (:mod:`.register`), ``register-batch`` (:mod:`.batch`), ``evaluate |
bench`` (:mod:`.evaluate`), ``montage`` (:mod:`.montage`), ``compare`` (:mod:`.compare`),
``train`` (:mod:`.train`), ``export-onnx`` (:mod:`.export`).
Each module exposes ``add_<name>_parser(subparsers)``, which creates its subparser and
sets ``func`` (parsed args -> int exit code) with ``set_defaults``. A module is imported
only when its command is the one being run, so ``fundusfeat demo`` never imports training
or evaluation code, and a module missing from an install disables only its own command.

Exit codes: 0 success; 1 the work was done but failed (a registration, a row) as the
command documents; 2 bad arguments or unreadable/unwritable files (a message on stderr).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fundusfeat._version import __version__
from fundusfeat.cli.options import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Command:
    """A subcommand, implemented in ``module`` and imported only when it is run."""

    name: str
    module: str
    adder: str
    help: str


COMMANDS = (
    Command(
        "demo", "fundusfeat.cli.register", "add_demo_parser", "register the embedded demo pair"
    ),
    Command(
        "register", "fundusfeat.cli.register", "add_register_parser", "register two fundus images"
    ),
    Command(
        "register-batch",
        "fundusfeat.cli.batch",
        "add_register_batch_parser",
        "register a table of pairs (each image detected once; resumable; parallel)",
    ),
    Command(
        "evaluate",
        "fundusfeat.cli.evaluate",
        "add_evaluate_parser",
        "evaluate registration on a dataset",
    ),
    Command(
        "bench",
        "fundusfeat.cli.evaluate",
        "add_bench_parser",
        "benchmark against classical detectors",
    ),
    Command(
        "montage",
        "fundusfeat.cli.montage",
        "add_montage_parser",
        "many fields of one eye on one canvas (jointly fitted)",
    ),
    Command(
        "compare",
        "fundusfeat.cli.compare",
        "add_compare_parser",
        "what changed between visits (change map, flicker, HTML viewer; DICOM)",
    ),
    Command("train", "fundusfeat.cli.train", "add_train_parser", "train the network"),
    Command(
        "export-onnx", "fundusfeat.cli.export", "add_export_parser", "export the network to ONNX"
    ),
)


def _add_unavailable(subparsers: Any, command: Command, reason: str) -> None:
    """A placeholder subparser listed in ``--help``; running it (with any arguments)
    explains why the command is unavailable."""
    sub = subparsers.add_parser(command.name, help=command.help, add_help=False)
    sub.set_defaults(
        func=lambda _args: _fail_usage(f"{command.name}: {reason}"), ignores_arguments=True
    )


def _add_command(subparsers: Any, command: Command) -> None:
    """Import ``command.module`` and let it add its subparser (missing module: placeholder)."""
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not _is_module_or_parent(exc.name, command.module):
            raise
        log.debug("command %r unavailable: %s", command.name, exc)
        _add_unavailable(subparsers, command, f"not available ({command.module} is missing)")
        return
    getattr(module, command.adder)(subparsers)


def _is_module_or_parent(missing: str, module: str) -> bool:
    """True when ``missing`` is ``module`` or one of its fundusfeat sub-packages."""
    return missing.startswith("fundusfeat.") and (
        module == missing or module.startswith(missing + ".")
    )


def _split_command(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """(top-level options, subcommand name): the command is the first argument that is
    not an option (top-level options take no values)."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            return list(argv[:i]), arg
    return list(argv), None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the module of ``command`` is imported."""
    parser = argparse.ArgumentParser(
        prog="fundusfeat",
        description="Learned keypoints for colour fundus image registration.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        if cmd.name == command:
            _add_command(subparsers, cmd)
        else:
            _add_unavailable(subparsers, cmd, "not loaded")
    return parser


def _fail_usage(message: str) -> int:
    raise UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse exits 2 on bad syntax)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    options, command = _split_command(argv)
    verbose = "-v" in options or "--verbose" in options
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    parser = build_parser(command)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "ignores_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except UsageError as exc:
        print(f"fundusfeat: error: {exc}", file=sys.stderr)
        return 2
