"""``python -m mirage_ros.bags.cli record | build-cache ...``: the bag tools on the command line (no ROS graph)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None, prog: str = "python -m mirage_ros.bags.cli") -> int:
    from mirage_ros.bags import build_memory, write

    parser = argparse.ArgumentParser(prog=prog, description="ROS 2 bags without a ROS graph: record the synthetic "
                                     "camera, build the memory offline")
    sub = parser.add_subparsers(dest="command", required=True)
    write.add_record_arguments(sub.add_parser("record", help="write the synthetic camera to a bag"))
    build_memory.add_arguments(sub.add_parser("build-cache", help="build and save the memory from a bag"))
    args = parser.parse_args(argv)
    return write.record_main(args) if args.command == "record" else build_memory.main(args)


if __name__ == "__main__":
    sys.exit(main())
