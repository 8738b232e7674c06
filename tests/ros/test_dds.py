"""mirage_ros.dds: the Fast DDS profile is loaded unless the user chose one or another middleware (no rclpy)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mirage_ros import dds

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def keep_process_state(monkeypatch):
    """These tests pass their own environments; the process's own decision stays as it was."""
    monkeypatch.setattr(dds, "decision", dds.decision)
    monkeypatch.setattr(dds, "_applied", dds._applied)


def test_sets_the_profile_variable_when_nothing_is_chosen():
    env = {}
    line = dds.use_large_data_profile(env)
    profile = dds.find_profile()
    assert profile is not None and profile.name == "fastdds_large_data.xml"
    assert env == {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile)}  # Fast DDS 3 (Kilted, the wheels)
    assert line.startswith("DDS: loading") and dds.decision == line
    assert dds.use_large_data_profile(env) == line  # a second call in the same process keeps the decision
    assert dds.use_large_data_profile(dict(env)).startswith("DDS: loading")
    dds._applied = ""  # a process started with our profile already in its environment (launch, demo.sh)
    assert dds.use_large_data_profile(env).startswith("DDS: using")
    env = {"ROS_DISTRO": "jazzy"}  # Fast DDS 2 reads only the old name
    dds.use_large_data_profile(env)
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"] == env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(profile)


def test_keeps_a_users_profile_and_other_middlewares():
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": "/opt/my_profile.xml"}
    assert "set by the user" in dds.use_large_data_profile(env) and env == {
        "FASTDDS_DEFAULT_PROFILES_FILE": "/opt/my_profile.xml"}
    env = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    line = dds.use_large_data_profile(env)
    assert "does not apply" in line and "Large images over DDS" in line and set(env) == {"RMW_IMPLEMENTATION"}
    env = {"RMW_IMPLEMENTATION": "rmw_fastrtps_dynamic_cpp"}
    assert dds.use_large_data_profile(env).startswith("DDS: loading")


def test_the_profile_has_a_large_segment_and_keeps_udp():
    root = ET.parse(ROOT / "config" / "fastdds_large_data.xml").getroot()
    ns = {"d": "http://www.eprosima.com"}
    shm = [t for t in root.iterfind(".//d:transport_descriptor", ns) if t.findtext("d:type", namespaces=ns) == "SHM"]
    assert len(shm) == 1 and int(shm[0].findtext("d:segment_size", namespaces=ns)) >= 32 * 2**20
    types = {t.findtext("d:type", namespaces=ns) for t in root.iterfind(".//d:transport_descriptor", ns)}
    assert types == {"SHM", "UDPv4"}
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext(".//d:useBuiltinTransports", namespaces=ns) == "false"


def test_fast_dds_2_is_recognised_from_the_ament_index_of_wheels(tmp_path):
    """PyPI wheels set no ROS_DISTRO: the Jazzy wheels register Fast DDS 2's package fastrtps, Kilted's fastdds."""
    def prefix(name, *packages):
        index = tmp_path / name / "share" / "ament_index" / "resource_index" / "packages"
        index.mkdir(parents=True)
        for package in packages:
            (index / package).touch()
        return str(tmp_path / name)

    jazzy, kilted = prefix("jazzy", "fastrtps", "rclpy"), prefix("kilted", "fastdds", "fastrtps_cmake_module")
    assert dds.is_fast_dds_2({"AMENT_PREFIX_PATH": jazzy})
    assert not dds.is_fast_dds_2({"AMENT_PREFIX_PATH": kilted}) and not dds.is_fast_dds_2({})
    assert not dds.is_fast_dds_2({"AMENT_PREFIX_PATH": f"{jazzy}:{kilted}"})  # Fast DDS 3 installed wins
    assert not dds.is_fast_dds_2({"AMENT_PREFIX_PATH": jazzy, "ROS_DISTRO": "kilted"})  # a sourced ROS decides
    env = {"AMENT_PREFIX_PATH": jazzy}
    dds.use_large_data_profile(env)
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"] == env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(dds.find_profile())
