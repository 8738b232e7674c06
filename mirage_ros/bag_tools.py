"""``python -m mirage_ros.bag_tools record | build-cache`` (kept as a command; ``mirage build-cache`` too).

The code lives in :mod:`mirage_ros.bags` (``read``, ``write``, ``build_memory``, ``cli``); importing it from
here is deprecated.
"""

import sys
import warnings

from mirage_ros.bags.build_memory import add_arguments, build_cache, main  # noqa: F401
from mirage_ros.bags.read import iter_bag_frames, read_bag_tf  # noqa: F401
from mirage_ros.bags.write import add_record_arguments, record_main  # noqa: F401

__all__ = ["read_bag_tf", "iter_bag_frames", "build_cache", "add_arguments", "main", "add_record_arguments",
           "record_main"]


def _cli(argv: list[str] | None = None) -> int:
    from mirage_ros.bags.cli import main as cli

    return cli(argv, prog="python -m mirage_ros.bag_tools")


if __name__ == "__main__":
    sys.exit(_cli())
else:
    warnings.warn("mirage_ros.bag_tools is deprecated; import from mirage_ros.bags.build_memory (mirage build-cache), "
                  "mirage_ros.bags.read or mirage_ros.bags.write", DeprecationWarning, stacklevel=2)
