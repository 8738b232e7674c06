"""A synthetic RGB-D camera for demos, tests and benchmarks: the rig (frames, no ROS) and the camera node."""
