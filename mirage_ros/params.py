"""Parameters of the ``mirage`` node: one table, declared with descriptions and ranges.

The table is the single source of truth: :func:`declare_parameters` declares every entry on a node
(``live`` entries may change while it runs, through :func:`update_params`; the others are read-only because a
change would need a restart: model, device, dtype, sizes, QoS, memory bounds), and ``config/mirage.yaml``
carries the same names with the same defaults (a test checks they agree). Values come back as a frozen
:class:`NodeParams`.
rclpy-free at import (``rcl_interfaces`` is imported only to declare), so ``mirage build-cache`` shares it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

__all__ = ["ParamSpec", "PARAM_SPECS", "NodeParams", "declare_parameters", "read_parameters", "validate_params",
           "update_params", "live_parameter_names", "CameraSpec", "CAMERA_SPECS", "CameraConfig", "validate_cameras",
           "declare_camera_parameters"]


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    live: bool = False  # may change while the node runs (ros2 param set); False: read at start-up only


PARAM_SPECS: tuple[ParamSpec, ...] = (
    # Frames and model
    ParamSpec("world_frame", "odom", "Fixed frame of the memory, the cloud and resolved goals."),
    ParamSpec("model", "mirage-tiny", "World model: mirage-tiny (shipped; falls back to the untrained tiny model when "
              "its weights are absent), tiny, wan22_5b-random, a saved world model directory, a Wan2.2 diffusers "
              "directory or the hub id Wan-AI/Wan2.2-TI2V-5B-Diffusers."),
    ParamSpec("model_path", "", "Local directory with the model weights; overrides `model` when set."),
    ParamSpec("checkpoints", "", "Trained modules loaded over the model, NAME=PATH comma-separated with NAME in "
              "side_branch, camera_embedding, lora (directories written by save_pretrained) or reference (a checkpoint of "
              "the paper's reference code: .safetensors file or directory, mapped where shapes allow)."),
    ParamSpec("device", "cpu", "Torch device for the model and the memory (cpu, cuda, cuda:1, ...)."),
    ParamSpec("dtype", "float32", "Model dtype.", choices=("float32", "bfloat16", "float16")),
    ParamSpec("cpu_offload", False, "Offload idle model parts to the CPU (large models on small GPUs)."),
    ParamSpec("steps", 0, "Denoising steps per chunk; 0 = the model's own default (its num_inference_steps).", 0,
              200, 1),
    ParamSpec("chunk_frames", 0, "Pixel frames per generated chunk (1 + 4k); 0 = the model's default.", 0, 241, 1),
    ParamSpec("image_height", 0,
              "Height of generated frames and encoded keyframes (multiple of 32); 0 = model default.", 0, 2048, 32),
    ParamSpec("image_width", 0,
              "Width of generated frames and encoded keyframes (multiple of 32); 0 = model default.", 0, 4096, 32),
    ParamSpec("fps", 10.0, "Frame rate of generated frames when a goal gives none (spaces their stamps).", 0.1, 120.0),
    ParamSpec("max_goal_frames", 121, "Largest number of frames one goal may ask for.", 1, 10000, 1),
    ParamSpec("goal_policy", "reject", "What a new goal does while one runs: reject it, or preempt the running one.",
              choices=("reject", "preempt")),
    # Ingest
    ParamSpec("keyframe_translation", 0.10, "Insert a keyframe after the camera moved this far (m).", 0.0, 100.0),
    ParamSpec("keyframe_rotation_deg", 10.0, "Insert a keyframe after the camera turned this far (degrees).", 0.0, 180.0),
    ParamSpec("sync_slop", 0.02, "Largest rgb/depth stamp difference paired as one frame (s).", 0.0, 1.0),
    ParamSpec("tf_timeout", 0.05, "How long goal and coverage lookups wait for a transform (s); input frames wait "
              "for their pose in the hold instead (tf_hold).", 0.0, 5.0),
    ParamSpec("ingest_queue_size", 1, "Frames waiting for the encoder; the oldest is dropped when full.", 1, 100, 1),
    ParamSpec("input_qos", "sensor_data", "QoS of the image inputs.", choices=("sensor_data", "reliable")),
    ParamSpec("input_queue_depth", 5, "History depth of the image subscriptions.", 1, 100, 1),
    ParamSpec("input_timeout", 5.0, "Warn when no synced rgb/depth pair arrived for this long (s).", 0.5, 600.0),
    # Memory
    ParamSpec("voxel_size", 0.05, "Memory voxel size for deduplication (m); 0 keeps every point.", 0.0, 10.0),
    ParamSpec("max_points", 2_000_000, "Memory capacity in points; 0 = unbounded.", 0, 1_000_000_000, 1),
    # Outputs
    ParamSpec("cloud_max_points", 100_000, "Point budget of ~/cache/points.", 1, 10_000_000, 1),
    ParamSpec("cloud_rate", 1.0, "Largest publish rate of ~/cache/points (Hz); it is sent only on change.", 0.01, 30.0),
    ParamSpec("stats_rate", 1.0, "Publish rate of ~/cache/stats (Hz).", 0.01, 30.0),
    # Transport, colours, upkeep and diagnostics
    ParamSpec("input_transport", "raw", "How images arrive: raw (sensor_msgs/Image on rgb/image, depth/image) or "
              "compressed (sensor_msgs/CompressedImage on rgb/image/compressed, jpeg or png, and "
              "depth/image/compressedDepth), as image_transport's plugins publish them; every camera alike.",
              choices=("raw", "compressed")),
    ParamSpec("depth_transport", "", "Transport of the depth image when it differs from input_transport: raw or "
              "compressedDepth; empty follows input_transport.", choices=("", "raw", "compressedDepth")),
    ParamSpec("cloud_colors", "observed", "Colours of ~/cache/points: observed (the pixels' mean colour per point) or "
              "pca (false colours of the latents, basis fixed per memory).", choices=("observed", "pca"), live=True),
    ParamSpec("decay_seconds", 0.0, "Forget points not re-observed for this long (s), for scenes that change; "
              "0 keeps them.", 0.0, 1e6, live=True),
    ParamSpec("expected_input_rate", 0.0, "Rate the camera should deliver (Hz); /diagnostics warns below half of it. "
              "0 judges only silence.", 0.0, 1000.0, live=True),
    ParamSpec("diagnostics_rate", 1.0, "Publish rate of /diagnostics (Hz).", 0.01, 30.0, live=True),
    # Data path (issue 11): the pose hold, torch threads, imagination kept apart, imagined camera, cache files
    ParamSpec("tf_hold", 0.2, "How long a paired rgb/depth set waits for the camera pose at its stamp before it is "
              "dropped (s), like tf2's MessageFilter; 0 drops it at once.", 0.0, 5.0),
    ParamSpec("torch_threads", 0, "Torch CPU threads (torch.set_num_threads); 0 = automatic: 1 on machines with 2 "
              "cores or fewer (more threads there slow every encode next to the ROS callbacks), torch's default "
              "otherwise.", 0, 256, 1, live=True),
    ParamSpec("keep_imagined", False, "Keep what goals imagine in the node's memory. Off: a goal rolls out on a "
              "scratch copy and the memory, its cloud, coverage and saves hold observations only (a goal may still "
              "ask with its keep_imagined field)."),
    ParamSpec("imagined_frame", "mirage_imagined_optical_frame", "TF frame of the imagined camera: broadcast from the "
              "world frame at each imagined frame's stamp; imagined images, masks and camera_info are in it."),
    ParamSpec("cache_directory", "", "Directory save_cache / load_cache names are relative to (nothing is read or "
              "written elsewhere); empty = $ROS_HOME/mirage (~/.ros/mirage)."),
    # Cameras (issue 12, section 4): each name has <name>.rgb_topic, .depth_topic, .camera_info_topic, .optical_frame
    ParamSpec("cameras", ["camera"], "Names of the RGB-D cameras feeding the one memory, each paired and posed on its "
              "own; per camera the parameters <name>.rgb_topic, <name>.depth_topic, <name>.camera_info_topic and "
              "<name>.optical_frame (see CAMERA_SPECS)."),
)

# Parameters of the table above that may change while the node runs (ros2 param set, validated by update_params);
# every other one is read at start-up: the model and its sizes, device, dtype, QoS, memory bounds, frames, cameras.
LIVE_PARAMETERS = frozenset({
    "steps", "fps", "max_goal_frames", "goal_policy",                      # goals (the next goal uses them)
    "keyframe_translation", "keyframe_rotation_deg", "sync_slop", "tf_timeout", "ingest_queue_size",
    "input_timeout",                                                       # ingest
    "cloud_max_points", "cloud_rate", "stats_rate",                        # outputs
})
PARAM_SPECS = tuple(replace(spec, live=True) if spec.name in LIVE_PARAMETERS else spec for spec in PARAM_SPECS)

CAMERA_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")

_BY_NAME = {spec.name: spec for spec in PARAM_SPECS}


@dataclass(frozen=True)
class NodeParams:
    """Validated values of :data:`PARAM_SPECS` (defaults: ``NodeParams.defaults()``)."""

    world_frame: str
    model: str
    model_path: str
    checkpoints: str
    device: str
    dtype: str
    cpu_offload: bool
    steps: int
    chunk_frames: int
    image_height: int
    image_width: int
    fps: float
    max_goal_frames: int
    goal_policy: str
    keyframe_translation: float
    keyframe_rotation_deg: float
    sync_slop: float
    tf_timeout: float
    ingest_queue_size: int
    input_qos: str
    input_queue_depth: int
    input_timeout: float
    voxel_size: float
    max_points: int
    cloud_max_points: int
    cloud_rate: float
    stats_rate: float
    input_transport: str
    depth_transport: str
    cloud_colors: str
    decay_seconds: float
    expected_input_rate: float
    diagnostics_rate: float
    # data path (issue 11) and cameras (issue 12, section 4)
    tf_hold: float
    torch_threads: int
    keep_imagined: bool
    imagined_frame: str
    cache_directory: str
    cameras: tuple[str, ...]

    @classmethod
    def defaults(cls) -> "NodeParams":
        return validate_params({})

    @property
    def checkpoint_list(self) -> list[str]:
        return [c.strip() for c in self.checkpoints.split(",") if c.strip()]

    @property
    def rgb_transport(self) -> str:
        """image_transport name of the colour input: raw | compressed."""
        return self.input_transport

    @property
    def depth_input_transport(self) -> str:
        """image_transport name of the depth input: raw | compressedDepth (depth_transport, else input_transport)."""
        if self.depth_transport:
            return self.depth_transport
        return "compressedDepth" if self.input_transport == "compressed" else "raw"


def validate_params(values: dict[str, Any]) -> NodeParams:
    """Check ranges and choices (the descriptor ranges are advisory for overrides) -> NodeParams.

    Raises ValueError naming the parameter.
    """
    out = {}
    for spec in PARAM_SPECS:
        value = values.get(spec.name, spec.default)
        if isinstance(spec.default, bool):
            value = bool(value)
        elif isinstance(spec.default, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"parameter {spec.name} must be an integer, got {value!r}")
        elif isinstance(spec.default, float):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"parameter {spec.name} must be a number, got {value!r}")
            value = float(value)
        elif isinstance(spec.default, list):
            value = _camera_names(spec.name, value)
        else:
            value = str(value)
        if spec.min is not None and value < spec.min or spec.max is not None and value > spec.max:
            raise ValueError(f"parameter {spec.name}={value} is outside [{spec.min}, {spec.max}]")
        if spec.choices is not None and value not in spec.choices:
            raise ValueError(f"parameter {spec.name}={value!r} must be one of {list(spec.choices)}")
        out[spec.name] = value
    for name in ("image_height", "image_width"):
        if out[name] % 32:  # 16x VAE compression times the transformer's 2x2 patches
            raise ValueError(f"parameter {name}={out[name]} must be a multiple of 32")
    if out["chunk_frames"] and (out["chunk_frames"] - 1) % 4:
        raise ValueError(f"parameter chunk_frames={out['chunk_frames']} must be 1 + 4k (e.g. 5, 9, 17, 33) or 0")
    if not out["world_frame"]:
        raise ValueError("parameter world_frame must not be empty")
    if not out["imagined_frame"] or out["imagined_frame"] == out["world_frame"]:
        raise ValueError("parameter imagined_frame must be a frame of its own (not empty, not the world frame)")
    return NodeParams(**out)


def _camera_names(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"parameter {name} must be a list of camera names, got {value!r}")
    names = tuple(value)
    if not names:
        raise ValueError(f"parameter {name} must name at least one camera")
    for camera in names:
        if not camera or not set(camera) <= CAMERA_NAME_CHARS or camera[0].isdigit():
            raise ValueError(f"parameter {name}: camera name {camera!r} must be letters, digits and _ (a parameter "
                             "prefix), not starting with a digit")
    if len(set(names)) != len(names):
        raise ValueError(f"parameter {name} lists a camera twice: {list(names)}")
    return names


# ------------------------------------------------------------------------------------------------ cameras
@dataclass(frozen=True)
class CameraSpec:
    """One per-camera parameter ``<camera>.<name>``; ``default(index, camera)`` gives its default."""

    name: str
    description: str
    first: str     # default of the first camera in ``cameras`` (today's topic names)
    others: str    # default of every other camera; "{camera}" is replaced by its name


CAMERA_SPECS: tuple[CameraSpec, ...] = (
    CameraSpec("rgb_topic", "Colour image topic of this camera (rgb8, bgr8, rgba8, bgra8 or mono8).",
               "rgb/image", "{camera}/rgb/image"),
    CameraSpec("depth_topic", "Depth topic registered to this camera's colour image (16UC1 mm or 32FC1 m).",
               "depth/image", "{camera}/depth/image"),
    CameraSpec("camera_info_topic", "CameraInfo of this camera's colour image.",
               "rgb/camera_info", "{camera}/rgb/camera_info"),
    CameraSpec("optical_frame", "Optical frame of this camera (REP 103 axes) used instead of the images' "
               "header.frame_id; empty = the header's.", "", ""),
)


@dataclass(frozen=True)
class CameraConfig:
    """The input of one camera: its name, the topics it publishes on (as given, before remapping) and its frame."""

    name: str
    rgb_topic: str
    depth_topic: str
    camera_info_topic: str
    optical_frame: str

    @classmethod
    def default(cls, name: str, index: int) -> "CameraConfig":
        return cls(name, **{spec.name: (spec.first if index == 0 else spec.others).format(camera=name)
                            for spec in CAMERA_SPECS})


def validate_cameras(names: tuple[str, ...], values: dict[str, Any]) -> list[CameraConfig]:
    """``values["<camera>.<name>"]`` over the defaults -> one CameraConfig per camera; ValueError naming a bad one."""
    configs = []
    for index, camera in enumerate(names):
        default = CameraConfig.default(camera, index)
        fields_ = {}
        for spec in CAMERA_SPECS:
            value = values.get(f"{camera}.{spec.name}", getattr(default, spec.name))
            if not isinstance(value, str):
                raise ValueError(f"parameter {camera}.{spec.name} must be a string, got {value!r}")
            if spec.name.endswith("_topic") and not value.strip():
                raise ValueError(f"parameter {camera}.{spec.name} must not be empty")
            fields_[spec.name] = value.strip()
        configs.append(CameraConfig(camera, **fields_))
    topics = [t for c in configs for t in (c.rgb_topic, c.depth_topic, c.camera_info_topic)]
    if len(set(topics)) != len(topics):
        raise ValueError(f"two cameras share an input topic: {topics}")
    return configs


def declare_camera_parameters(node, names: tuple[str, ...]) -> list[CameraConfig]:
    """Declare ``<camera>.<name>`` for every camera in ``names`` on an rclpy node and read them back, validated."""
    from rcl_interfaces.msg import ParameterDescriptor

    for index, camera in enumerate(names):
        default = CameraConfig.default(camera, index)
        for spec in CAMERA_SPECS:
            node.declare_parameter(f"{camera}.{spec.name}", getattr(default, spec.name),
                                   ParameterDescriptor(description=spec.description, read_only=True))
    return validate_cameras(names, {f"{c}.{s.name}": node.get_parameter(f"{c}.{s.name}").value
                                    for c in names for s in CAMERA_SPECS})


def _descriptor(spec: ParamSpec):
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    description = spec.description
    if spec.choices:
        description += f" One of: {', '.join(c or '(empty)' for c in spec.choices)}."
    description += (" Can change at run time (ros2 param set)." if spec.live
                    else " Read-only: read at start-up; restart the node to change it.")
    desc = ParameterDescriptor(description=description, read_only=not spec.live)
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.min is not None and not isinstance(spec.default, bool):
        if isinstance(spec.default, int):
            desc.integer_range = [IntegerRange(from_value=int(spec.min), to_value=int(spec.max),
                                               step=int(spec.step or 1))]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max),
                                                            step=0.0)]
    return desc


def update_params(current: NodeParams, changes: dict[str, Any]) -> NodeParams:
    """``current`` with ``changes`` (name -> value) applied, validated like at start-up -> a new NodeParams.

    Raises ValueError naming the parameter when one is unknown, read-only (:attr:`ParamSpec.live` False: it needs
    a restart) or out of range; ``current`` is never modified. Names not in the table must be filtered out first.
    """
    for name in changes:
        spec = _BY_NAME.get(name)
        if spec is None:
            raise ValueError(f"unknown parameter {name}")
        if not spec.live:
            raise ValueError(f"parameter {name} is read-only while the node runs (it is read at start-up); "
                             f"restart the node with -p {name}:=...")
    return validate_params({**asdict(current), **changes})


def live_parameter_names() -> tuple[str, ...]:
    """Names of the parameters that may change while the node runs."""
    return tuple(spec.name for spec in PARAM_SPECS if spec.live)


def declare_parameters(node) -> None:
    """Declare every entry of :data:`PARAM_SPECS` on an rclpy node (overrides from YAML / --ros-args apply)."""
    for spec in PARAM_SPECS:
        node.declare_parameter(spec.name, spec.default, _descriptor(spec))


def read_parameters(node) -> NodeParams:
    """Current values of the declared parameters, validated."""
    return validate_params({f.name: node.get_parameter(f.name).value for f in fields(NodeParams)})
