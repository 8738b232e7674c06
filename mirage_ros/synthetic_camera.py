"""``python -m mirage_ros.synthetic_camera [--ros-args ...]``: the synthetic RGB-D camera node.

A command only: the node is :mod:`mirage_ros.sim.camera` (the installed executable ``synthetic_camera`` runs it too).
"""

if __name__ == "__main__":
    import sys

    from mirage_ros.sim.camera import main

    sys.exit(main())
