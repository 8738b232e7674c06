"""``python -m mirage_ros.bag_replay BAG [--rate R] ...``: replay a bag with /clock.

A command only: the replayer is :mod:`mirage_ros.bags.replay` (the installed executable ``bag_replay`` runs it too).
"""

if __name__ == "__main__":
    import sys

    from mirage_ros.bags.replay import main

    sys.exit(main())
