"""``python -m mirage_ros.synthetic_camera``: the synthetic RGB-D camera node (kept as a command).

The code lives in :mod:`mirage_ros.sim.camera`; importing it from here is deprecated.
"""

import sys
import warnings

from mirage_ros.sim.camera import *  # noqa: F401,F403
from mirage_ros.sim.camera import __all__, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
else:
    warnings.warn("mirage_ros.synthetic_camera is deprecated; import from mirage_ros.sim.camera",
                  DeprecationWarning, stacklevel=2)
