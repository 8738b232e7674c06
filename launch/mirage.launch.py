"""Launch the mirage node (optionally with the synthetic camera, a bag replay and RViz).

    ros2 launch mirage_ros mirage.launch.py                                  # node only, live camera topics
    ros2 launch mirage_ros mirage.launch.py synthetic:=true rviz:=true       # self-contained demo
    ros2 launch mirage_ros mirage.launch.py bag:=/path/to/bag                # replay with /clock (sim time)
    ros2 launch mirage_ros mirage.launch.py rgb_topic:=/camera/color/image_raw \
        depth_topic:=/camera/aligned_depth_to_color/image_raw camera_info_topic:=/camera/color/camera_info

Arguments: use_sim_time, namespace, params_file, rgb_topic, depth_topic, camera_info_topic, rviz, rviz_config,
log_level, synthetic, bag, bag_rate, bag_wait.

RViz gets a copy of ``rviz_config`` whose topics follow the namespace and the topic remaps (and whose fixed frame
is the params file's ``world_frame``); ``rviz:=true`` where rviz2 is not installed warns and starts the rest.

Large images over DDS: unless FASTDDS_DEFAULT_PROFILES_FILE (or FASTRTPS_DEFAULT_PROFILES_FILE) is already set, or
RMW_IMPLEMENTATION names another middleware, every process started here gets the package's
config/fastdds_large_data.xml (a 64 MiB shared-memory segment; Fast DDS's default 512 KB loses 640x480 RGB-D
between processes). A camera driver started elsewhere needs the same variable: see the README.
"""

import os
import tempfile

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, LogInfo, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node, PushRosNamespace


PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def _fastdds_profile(context):
    """Load the large-data Fast DDS profile in every process of this launch, unless the user chose otherwise."""
    rmw = os.environ.get("RMW_IMPLEMENTATION", "")
    if rmw and not rmw.startswith("rmw_fastrtps"):
        return [LogInfo(msg=f"mirage: RMW_IMPLEMENTATION={rmw}; the Fast DDS profile does not apply (README: "
                            "'Large images over DDS')")]
    given = next((name for name in PROFILE_VARIABLES if os.environ.get(name)), None)
    if given:
        return [LogInfo(msg=f"mirage: keeping the user's {given}={os.environ[given]}")]
    profile = os.path.join(get_package_share_directory("mirage_ros"), "config", "fastdds_large_data.xml")
    # Fast DDS 2 (Humble, Iron, Jazzy) reads only the old name; Fast DDS 3 warns about it
    fast_dds_2 = os.environ.get("ROS_DISTRO", "") in ("humble", "iron", "jazzy")
    names = PROFILE_VARIABLES if fast_dds_2 else PROFILE_VARIABLES[:1]
    return [SetEnvironmentVariable(name, profile) for name in names] + [
        LogInfo(msg=f"mirage: FASTDDS_DEFAULT_PROFILES_FILE={profile} for every process of this launch (load it in "
                    "your camera driver too)")]


def _bag_replay(context):
    bag = LaunchConfiguration("bag").perform(context)
    if not bag:
        return []
    remaps, wait_for = [], ["--wait-for", "/tf", "--wait-for", "/tf_static"]
    for key, recorded in (("rgb_topic", "/rgb/image"), ("depth_topic", "/depth/image"),
                          ("camera_info_topic", "/rgb/camera_info")):
        topic = LaunchConfiguration(key).perform(context)
        namespace = LaunchConfiguration("namespace").perform(context).strip("/")
        target = topic if topic.startswith("/") else "/" + "/".join(p for p in (namespace, topic) if p)
        remaps += ["--remap", f"{recorded}:={target}"]
        wait_for += ["--wait-for", target]
    # The replay holds the bag until the node's input subscriptions match (the node loads its model first: seconds),
    # at most bag_wait seconds, and prints when it starts and what nobody hears.
    return [ExecuteProcess(
        cmd=["python3", "-m", "mirage_ros.bags.replay", bag, "--rate", LaunchConfiguration("bag_rate").perform(context),
             "--wait", LaunchConfiguration("bag_wait").perform(context), *remaps, *wait_for],
        output="screen", name="mirage_bag_replay")]


def _absolute(topic: str, namespace: str) -> str:
    """A node-relative topic as the node in ``namespace`` resolves it (absolute topics stay)."""
    if topic.startswith("/"):
        return topic
    return "/" + "/".join(p for p in (namespace.strip("/"), topic) if p)


def _world_frame(params_file: str, default: str = "odom") -> str:
    """``world_frame`` from a ROS 2 params file (any node key, e.g. ``/**`` or ``mirage``), else ``default``."""
    try:
        import yaml

        with open(params_file) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, ImportError, ValueError):
        return default
    for section in data.values() if isinstance(data, dict) else ():
        params = section.get("ros__parameters", {}) if isinstance(section, dict) else {}
        if isinstance(params, dict) and params.get("world_frame"):
            return str(params["world_frame"])
    return default


def rviz_config_for(template: str, namespace: str, rgb_topic: str, world_frame: str) -> str:
    """The RViz config text of ``template`` with the node's topics under ``namespace``, the camera display on
    ``rgb_topic`` and the fixed frame ``world_frame`` (config/mirage.rviz names /mirage/... and /rgb/image)."""
    with open(template) as f:
        text = f.read()
    node = _absolute("mirage", namespace)
    text = text.replace("Value: /mirage/", f"Value: {node}/")
    text = text.replace("Value: /rgb/image\n", f"Value: {_absolute(rgb_topic, namespace)}\n")
    return text.replace("Fixed Frame: odom", f"Fixed Frame: {world_frame}")


def _rviz(context):
    if LaunchConfiguration("rviz").perform(context).lower() not in ("true", "1", "yes"):
        return []
    try:
        get_package_share_directory("rviz2")
    except Exception:  # noqa: BLE001 - PackageNotFoundError, or no ament index at all
        return [LogInfo(msg="WARNING: rviz:=true but rviz2 is not installed (sudo apt install ros-$ROS_DISTRO-rviz2); "
                            "starting without it")]
    namespace = LaunchConfiguration("namespace").perform(context)
    text = rviz_config_for(LaunchConfiguration("rviz_config").perform(context), namespace,
                           LaunchConfiguration("rgb_topic").perform(context),
                           _world_frame(LaunchConfiguration("params_file").perform(context)))
    with tempfile.NamedTemporaryFile("w", prefix="mirage_", suffix=".rviz", delete=False) as f:
        f.write(text)
    sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() == "true" or \
        bool(LaunchConfiguration("bag").perform(context))
    return [Node(package="rviz2", executable="rviz2", name="rviz2", output="screen", arguments=["-d", f.name],
                 parameters=[{"use_sim_time": sim_time}])]


def generate_launch_description():
    share = get_package_share_directory("mirage_ros")
    use_sim_time = LaunchConfiguration("use_sim_time")
    bag_given = PythonExpression(["'", LaunchConfiguration("bag"), "' != ''"])
    sim_time = PythonExpression(["'", use_sim_time, "'.lower() == 'true' or ", bag_given])
    remappings = [
        ("rgb/image", LaunchConfiguration("rgb_topic")),
        ("depth/image", LaunchConfiguration("depth_topic")),
        ("rgb/camera_info", LaunchConfiguration("camera_info_topic")),
    ]
    log_args = ["--ros-args", "--log-level", LaunchConfiguration("log_level")]
    return LaunchDescription([
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (true with bag:=)."),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node (and camera)."),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "mirage.yaml"),
                              description="Node parameters (YAML)."),
        DeclareLaunchArgument("rgb_topic", default_value="rgb/image", description="Colour image input."),
        DeclareLaunchArgument("depth_topic", default_value="depth/image",
                              description="Depth input registered to the colour camera (16UC1 mm or 32FC1 m)."),
        DeclareLaunchArgument("camera_info_topic", default_value="rgb/camera_info",
                              description="CameraInfo of the colour camera."),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="Start RViz with config/mirage.rviz (topics follow namespace and remaps)."),
        DeclareLaunchArgument("rviz_config", default_value=os.path.join(share, "config", "mirage.rviz"),
                              description="RViz config template (its /mirage/... and /rgb/image topics are "
                                          "rewritten to follow namespace and remaps)."),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error."),
        DeclareLaunchArgument("synthetic", default_value="false",
                              description="Also start the synthetic RGB-D camera (publishes the input topics)."),
        DeclareLaunchArgument("bag", default_value="", description="Replay this bag with /clock (sim time)."),
        DeclareLaunchArgument("bag_rate", default_value="1.0", description="Bag playback speed."),
        DeclareLaunchArgument("bag_wait", default_value="60.0",
                              description="Seconds the bag replay waits for the node's input subscriptions before "
                                          "it plays anyway (it says which topics nobody hears)."),
        OpaqueFunction(function=_fastdds_profile),
        PushRosNamespace(LaunchConfiguration("namespace")),
        Node(
            package="mirage_ros", executable="mirage_node", name="mirage", output="screen",
            parameters=[LaunchConfiguration("params_file"), {"use_sim_time": sim_time}],
            remappings=remappings, arguments=log_args),
        Node(
            package="mirage_ros", executable="synthetic_camera", name="synthetic_camera", output="screen",
            condition=IfCondition(LaunchConfiguration("synthetic")),
            parameters=[{"use_sim_time": sim_time}], remappings=remappings, arguments=log_args),
        OpaqueFunction(function=_bag_replay),
        OpaqueFunction(function=_rviz),
    ])
