"""Installs the core library ``mirage`` (no ROS needed). The ROS package is built by colcon."""

from setuptools import find_packages, setup

setup(
    name="mirage",
    version="0.1.0",
    description="Latent spatial memory for video world models (Mirage), with a ROS 2 adapter",
    packages=find_packages(include=["mirage", "mirage.*"]),
    package_data={"mirage": ["assets/**/*", "assets/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        "scipy>=1.10",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "diffusers==0.42.1",
        "transformers>=4.50",
        "peft>=0.13",
        "accelerate>=0.30",
        "open3d>=0.18",
        "imageio>=2.30",
        "imageio-ffmpeg>=0.5",
        "opencv-python-headless>=4.8",
        "rosbags>=0.10",
        "PyYAML>=6",
    ],
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
    entry_points={"console_scripts": ["mirage=mirage.cli:main"]},
)
