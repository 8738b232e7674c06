"""The ``mirage`` command line: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``main(args) -> int``;
modules are imported only when their subcommand runs, so ``mirage --help`` stays fast and one broken
optional dependency does not take the others down.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("mirage.demo", "synthetic scene -> memory -> reprojected views, PLY and images"),
    "train": ("mirage.train.cli", "two-stage fine-tuning of the side branch and LoRA"),
    "eval": ("mirage.eval.cli", "novel-view and closed-loop evaluation"),
    "eval-bag": ("mirage_ros.bags.eval_recording", "imagine the path a recorded bag drove later, compare with what it recorded"),
    "build-cache": ("mirage_ros.bags.build_memory", "build and save the memory from a ROS 2 bag (no ROS graph)"),
    "tum-to-bag": ("mirage_ros.bags.tum", "convert a TUM RGB-D sequence into a ROS 2 bag (MCAP, no ROS graph)"),
}
# Subcommands that need an optional extra of pyproject.toml: {subcommand: (module it needs, extra)}.
EXTRAS: dict[str, tuple[str, str]] = {"build-cache": ("rosbags", "bags"), "eval-bag": ("rosbags", "bags"),
                                      "tum-to-bag": ("rosbags", "bags")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirage", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def missing_extra(name: str) -> str | None:
    """The install hint when subcommand ``name`` needs an optional package that is not installed, else None."""
    if name not in EXTRAS:
        return None
    module, extra = EXTRAS[name]
    try:
        found = importlib.util.find_spec(module) is not None
    except ValueError:  # a module in sys.modules without a spec
        found = False
    return None if found else f"needs the '{module}' package: pip install \"mirage[{extra}]\""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        build_parser().parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = SUBCOMMANDS[name]
    hint = missing_extra(name)
    if hint is not None:
        print(f"mirage {name}: {hint}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(f"mirage {name}: cannot import {module_name}: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"mirage {name}", description=help_text)
    module.add_arguments(parser)
    return int(module.main(parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
