"""The node's logic without rclpy (a test imports every module here with rclpy made unimportable).

    ingest          FramePair -> header check -> pose at the stamp -> keyframe -> fit -> world_model.observe;
                    the per-camera intrinsics table (CameraTable)
    queue           KeepLatestQueue (what subscription callbacks push into) and its IngestWorker thread
    goals           GoalRunner: admit (reject | preempt), cancel, run (poses, padding, rollout, feedback,
                    outcome), coverage queries
    goal_poses      goal poses -> camera-to-world in the world frame (TF composition, interpolation, stamps)
    memory_holder   MemoryHolder: the node's one memory and the one lock around it
    model_loading   node parameters -> the library's load_world_model (world_model_from_params)
"""
