"""Project metadata: one version, dependencies that are used, the ruff and pre-commit configuration, extras."""

import ast
import fnmatch
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import mirage

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

# Distribution name -> the module mirage imports it as.
IMPORT_NAMES = {"opencv-python-headless": "cv2", "PyYAML": "yaml"}


def _requirement_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.\-]+", requirement).group()


def _imported_modules(folder: Path) -> set[str]:
    """Top-level names of every module imported anywhere under ``folder`` (lazy imports in functions too)."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_one_version():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mirage.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", mirage.__version__)
    assert ET.parse(ROOT / "package.xml").getroot().findtext("version") == mirage.__version__
    assert not (ROOT / "setup.py").exists() or "version=" not in (ROOT / "setup.py").read_text()
    assert f"## [{mirage.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_setuptools_reads_the_version_from_the_package():
    pyprojecttoml = pytest.importorskip("setuptools.config.pyprojecttoml")
    config = pyprojecttoml.read_configuration(ROOT / "pyproject.toml", expand=True)
    assert config["project"]["version"] == mirage.__version__
    assert config["project"]["scripts"] == {"mirage": "mirage.cli:main"}


def test_every_core_dependency_is_imported_by_the_library():
    imported = _imported_modules(ROOT / "mirage")
    for requirement in PROJECT["dependencies"]:
        name = _requirement_name(requirement)
        if name == "imageio-ffmpeg":
            # imageio's ffmpeg plugin (the H.264 writer of mirage.media) runs on it; nothing imports it by name.
            assert "libx264" in (ROOT / "mirage" / "media.py").read_text()
            continue
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        assert module in imported, f"{name} is a hard requirement but nothing in mirage/ imports {module}"
    assert "open3d" not in imported and not any("open3d" in r for r in PROJECT["dependencies"])


def test_bag_and_ros_packages_are_extras_the_core_never_imports():
    extras = PROJECT["optional-dependencies"]
    core = {_requirement_name(r) for r in PROJECT["dependencies"]}
    assert {"rosbags", "PyYAML"}.isdisjoint(core)
    assert [_requirement_name(r) for r in extras["bags"]] == ["rosbags"]
    assert "mirage[bags]" in extras["ros"] and "mirage[ros]" in extras["test"]
    assert {"rosbags", "yaml", "rclpy"}.isdisjoint(_imported_modules(ROOT / "mirage"))
    assert {"rosbags", "yaml"} <= _imported_modules(ROOT / "mirage_ros")  # the extras earn their place there


def test_build_cache_names_the_extra_when_rosbags_is_missing(monkeypatch, capsys):
    from mirage import cli

    monkeypatch.setitem(sys.modules, "rosbags", None)  # import rosbags now fails, as when it is not installed
    assert cli.main(["build-cache", "--bag", "nowhere", "--out", "x.safetensors"]) == 2
    assert 'pip install "mirage[bags]"' in capsys.readouterr().err
    assert cli.missing_extra("demo") is None


def test_ruff_selects_every_code_the_noqa_comments_name():
    selected = PYPROJECT["tool"]["ruff"]["lint"]["select"]
    codes = set()
    for folder in ("mirage", "mirage_ros", "bench", "tests", "launch", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            for match in re.finditer(r"#\s*noqa:\s*([A-Z0-9, ]+)", path.read_text()):
                codes.update(code.strip() for code in match.group(1).split(",") if code.strip())
    assert codes, "expected noqa comments in the code"
    unselected = sorted(code for code in codes if not any(code.startswith(prefix) for prefix in selected))
    assert not unselected, f"noqa codes that ruff does not check: {unselected}"


def test_package_data_ships_every_asset():
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["mirage"]
    assets = [p.relative_to(ROOT / "mirage").as_posix() for p in (ROOT / "mirage" / "assets").rglob("*") if p.is_file()]
    assert assets
    assert all(any(fnmatch.fnmatch(a, pattern) for pattern in patterns) for a in assets)


def test_pre_commit_admits_the_shipped_weights_and_bootstrap_hashes_pyproject():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff", "trailing-whitespace", "end-of-file-fixer", "check-yaml", "check-added-large-files"} <= set(hooks)
    limit_kb = int(next(a for a in hooks["check-added-large-files"]["args"] if a.startswith("--maxkb=")).split("=")[1])
    largest = max(p.stat().st_size for p in (ROOT / "mirage" / "assets").rglob("*") if p.is_file())
    assert largest <= limit_kb * 1024
    ruff_rev = next(repo["rev"] for repo in config["repos"] if "ruff" in repo["repo"])
    assert f"ruff=={ruff_rev.lstrip('v')}" in PROJECT["optional-dependencies"]["test"]
    pip_key = next(line for line in (ROOT / "scripts" / "bootstrap.sh").read_text().splitlines()
                   if line.startswith("pip_key="))
    assert "pyproject.toml" in pip_key and "mirage/__init__.py" in pip_key


def test_licence_is_mit():
    assert PROJECT["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the mirage authors" in text


def test_mirage_demo_command_writes_views_and_memory(tmp_path, capsys):
    from mirage import cli

    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--height", "32", "--width", "48", "--frames", "3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["memory.ply", "memory.safetensors", "view_01.png"]
    mean = float(re.search(r"mean PSNR ([\d.]+) dB", capsys.readouterr().out).group(1))
    assert 8.0 < mean < 60.0  # the readout resembles the held-out view but patchify blocks keep it far from exact
