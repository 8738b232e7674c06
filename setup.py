"""Thin setuptools entry point beside package.xml, where ROS users look for it (``pip install .``, ``colcon``).

Everything (name, the one version in ``mirage/__init__.py``, dependencies, the ``mirage`` command, packages) is read
from pyproject.toml; nothing is repeated here. colcon builds the ROS package ``mirage_ros`` from package.xml
(ament_cmake: interfaces, the node's executables, launch and config files); this file installs the core library.
"""

from setuptools import setup

setup()
