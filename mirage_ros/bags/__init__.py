"""ROS 2 bags, read and written with ``rosbags`` (no ROS graph except for ``replay``).

    read           BAG_TOPICS, the typestore, TF and stamp-matched RGB-D frames of a bag
    write          the synthetic camera into a bag (``record``)
    build_memory   ``mirage build-cache``: a bag -> the memory, through the node's own ingest
    eval_recording ``mirage eval-bag``: a bag -> the memory from its first part -> imagined vs recorded frames
    tum            ``mirage tum-to-bag``: a TUM RGB-D sequence -> a bag with the synthetic camera's topics
    replay         a bag into a running graph with /clock (rclpy)
    cli            ``python -m mirage_ros.bags.cli record | build-cache`` (also ``python -m mirage_ros.bag_tools``)
"""
