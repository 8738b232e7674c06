"""``python -m mirage_ros.bag_tools record | build-cache ...`` (``mirage build-cache`` too).

A command only: the tools are :mod:`mirage_ros.bags` (``cli``, ``read``, ``write``, ``build_memory``).
"""

if __name__ == "__main__":
    import sys

    from mirage_ros.bags.cli import main

    sys.exit(main(None, prog="python -m mirage_ros.bag_tools"))
