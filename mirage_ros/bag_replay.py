"""``python -m mirage_ros.bag_replay BAG ...`` (kept as a command): replay a bag with /clock.

The code lives in :mod:`mirage_ros.bags.replay`; importing it from here is deprecated.
"""

import sys
import warnings

from mirage_ros.bags.replay import BagReplayer, main  # noqa: F401

__all__ = ["BagReplayer", "main"]

if __name__ == "__main__":
    sys.exit(main())
else:
    warnings.warn("mirage_ros.bag_replay is deprecated; import from mirage_ros.bags.replay", DeprecationWarning,
                  stacklevel=2)
