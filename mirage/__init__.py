"""mirage: latent spatial memory for video world models (core library, no ROS imports)."""

__version__ = "0.1.0"
