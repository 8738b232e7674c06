"""mirage: latent spatial memory for video world models (core library, no ROS imports)."""

# The one version of the project: pyproject.toml reads it (setuptools dynamic version) and package.xml
# carries the same string (tests/test_project.py checks both).
__version__ = "0.3.0"
