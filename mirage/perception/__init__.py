"""What the project perceives in frames: metric depth for generated frames (:mod:`.depth`) and the pixels that must
never enter the memory: moving objects, sky, invalid depth (:mod:`.exclusion`)."""
