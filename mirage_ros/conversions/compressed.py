"""sensor_msgs/CompressedImage <-> numpy, in the wire formats of image_transport's plugins (decoded with OpenCV).

Two plugins, as ros-perception/image_transport_plugins writes them (read from its sources, rolling branch):

* ``compressed`` (topic ``<image>/compressed``): ``data`` is a JPEG or PNG file; ``format`` is
  ``"<encoding>; <jpeg|png> compressed <target>"``, e.g. ``"rgb8; jpeg compressed bgr8"``,
  ``"mono8; jpeg compressed mono8"``, ``"mono8; png compressed "`` (colour is always compressed as BGR; grey
  PNG names no target). Very old publishers wrote no ``;`` at all: then 1 channel is mono8, 3 are bgr8.
* ``compressedDepth`` (topic ``<depth>/compressedDepth``): ``format`` is ``"<16UC1|32FC1>; compressedDepth png"``
  (older: ``"...; compressedDepth"``; oldest: no ``;``, meaning png), and ``data`` starts with a 12-byte
  ``ConfigHeader`` in the host's (little-endian) byte order: ``int32 format`` (0 = INV_DEPTH) and
  ``float32 depthParam[2]`` = (A, B), followed by a 16-bit PNG.

  - 16UC1: the PNG holds the millimetres as they are (values above ``depth_max`` * 1000 set to 0); A, B unused
    (the plugin leaves them uninitialised; this encoder writes zeros).
  - 32FC1: inverse-depth quantisation. With ``z0 = depth_quantization`` (default 100) and ``depth_max``
    (default 10 m): ``A = z0 * (z0 + 1)``, ``B = 1 - A / depth_max``; a depth d < depth_max is stored as
    ``uint16(A / d + B)`` (float32 maths, truncated), anything else (NaN, >= depth_max) as 0. Decoding:
    ``d = A / (v - B)`` for v != 0, NaN for 0.

  The plugin's other depth format, RVL (``"...; compressedDepth rvl"``), is refused with a ValueError that
  says to publish PNG.

Depth comes out in mirage's convention (metres, 0 = no depth). A payload that does not decode (truncated,
garbage, wrong bit depth) raises :class:`CorruptPayload`, a ValueError, so the ingest counts and skips it.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from mirage_ros.conversions._buffers import as_uint8, message_bytes
from mirage_ros.conversions.image import COLOUR_ENCODINGS, DEPTH_ENCODINGS
from mirage_ros.conversions.time import fill_header

__all__ = ["COMPRESSED_TRANSPORT", "COMPRESSED_DEPTH_TRANSPORT", "CONFIG_HEADER", "INV_DEPTH", "CorruptPayload",
           "is_compressed", "compressed_encoding", "transport_topic", "encode_compressed", "encode_compressed_depth",
           "compressed_message",
           "rgb_to_compressed", "depth_to_compressed_depth", "check_colour_format", "check_depth_format",
           "compressed_to_rgb", "compressed_to_depth", "inverse_depth_params"]

COMPRESSED_TRANSPORT = "compressed"
COMPRESSED_DEPTH_TRANSPORT = "compressedDepth"
CONFIG_HEADER = struct.Struct("<iff")  # compressionFormat (enum, int32), float depthParam[2]: 12 bytes
INV_DEPTH = 0                          # compressionFormat { UNDEFINED = -1, INV_DEPTH }
DEFAULT_DEPTH_MAX = 10.0               # the compressedDepth publisher's defaults
DEFAULT_DEPTH_QUANTIZATION = 100.0
DEFAULT_PNG_LEVEL = 3
DEFAULT_JPEG_QUALITY = 95
# colour-like encodings a compressed colour stream may declare (16-bit ones are scaled to 8 bits)
_COLOUR_LIKE = tuple(COLOUR_ENCODINGS) + ("rgb16", "bgr16", "rgba16", "bgra16", "mono16")


class CorruptPayload(ValueError):
    """The compressed bytes do not decode to an image of the kind the format string promises."""


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - opencv is a dependency of mirage
        raise ImportError("compressed images need OpenCV: pip install opencv-python-headless "
                          "(or apt install python3-opencv)") from exc
    return cv2


def is_compressed(msg: Any) -> bool:
    """Whether ``msg`` is a CompressedImage (has ``format`` and ``data``, no ``encoding``), duck-typed."""
    return hasattr(msg, "format") and hasattr(msg, "data") and not hasattr(msg, "encoding")


def _split_format(fmt: str) -> tuple[str, str | None]:
    """``"rgb8; jpeg compressed bgr8"`` -> ("rgb8", "; jpeg compressed bgr8"); no ``;`` -> ("", None)."""
    pos = fmt.find(";")
    return ("", None) if pos < 0 else (fmt[:pos].strip(), fmt[pos:])


def compressed_encoding(msg: Any) -> str:
    """The raw encoding a CompressedImage says it carries ("" when its format names none)."""
    return _split_format(str(msg.format))[0]


def transport_topic(base: str, transport: str) -> str:
    """``("rgb/image", "compressed") -> "rgb/image/compressed"``; ``"raw"`` keeps the base topic."""
    if transport == "raw":
        return base
    if transport not in (COMPRESSED_TRANSPORT, COMPRESSED_DEPTH_TRANSPORT):
        raise ValueError(f"unknown image transport {transport!r}; expected raw, compressed or compressedDepth")
    return f"{base.rstrip('/')}/{transport}"


def _decode(data: np.ndarray, what: str) -> np.ndarray:
    cv2 = _cv2()
    if data.size == 0:
        raise CorruptPayload(f"{what}: empty payload")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise CorruptPayload(f"{what}: OpenCV cannot decode the payload ({exc})") from None
    if image is None or image.size == 0:
        raise CorruptPayload(f"{what}: {data.size} bytes that OpenCV cannot decode (truncated or not an image)")
    return image


# ================================================================================ colour (`compressed` plugin)
def encode_compressed(array: np.ndarray, encoding: str = "rgb8", fmt: str = "jpeg", *,
                      jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                      png_level: int = DEFAULT_PNG_LEVEL) -> tuple[str, bytes]:
    """(H, W[, C]) uint8 image in ``encoding`` -> (format string, bytes) as the ``compressed`` plugin publishes them.

    Colour is converted to BGR (alpha dropped) before compression and named ``bgr8``; mono8 stays grey.
    Raises ValueError for other encodings, shapes or formats.
    """
    cv2 = _cv2()
    if encoding not in COLOUR_ENCODINGS:
        raise ValueError(f"compressed colour encoding must be one of {list(COLOUR_ENCODINGS)}, got {encoding!r}")
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"compressed format must be jpeg or png, got {fmt!r}")
    array = np.asarray(array)
    channels = 1 if encoding == "mono8" else 4 if encoding in ("rgba8", "bgra8") else 3
    if array.dtype != np.uint8 or array.ndim != (2 if channels == 1 else 3) or \
            (channels > 1 and array.shape[2] != channels):
        raise ValueError(f"{encoding} needs a uint8 array of shape (H, W{'' if channels == 1 else f', {channels}'}), "
                         f"got {array.dtype} {array.shape}")
    if channels == 1:
        pixels, target = array, "mono8"
    else:
        bgr = array[..., :3] if encoding.startswith("bgr") else array[..., 2::-1]
        pixels, target = np.ascontiguousarray(bgr), "bgr8"
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        name = f"{encoding}; jpeg compressed {target}"
    else:
        ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
        name = f"{encoding}; png compressed {'' if channels == 1 else target}"
    if not ok:  # pragma: no cover - OpenCV fails only on unsupported input, checked above
        raise ValueError(f"OpenCV could not encode the image as {fmt}")
    return name, buf.tobytes()


def compressed_message(fmt: str, data: bytes, *, stamp: Any = None, frame_id: str = "",
                       msg_type: type | None = None) -> Any:
    """A sensor_msgs/CompressedImage (or ``msg_type``) with ``format`` = ``fmt`` and ``data``."""
    if msg_type is None:
        from sensor_msgs.msg import CompressedImage as msg_type
    msg = msg_type()
    fill_header(msg, stamp, frame_id)
    msg.format = fmt
    msg.data = message_bytes(msg, data)
    return msg


def rgb_to_compressed(array: np.ndarray, encoding: str = "rgb8", fmt: str = "jpeg", *, stamp: Any = None,
                      frame_id: str = "", msg_type: type | None = None, **options) -> Any:
    """An image -> sensor_msgs/CompressedImage (see :func:`encode_compressed`; ``options``: jpeg_quality,
    png_level). ``msg_type`` defaults to sensor_msgs.msg.CompressedImage."""
    name, data = encode_compressed(array, encoding, fmt, **options)
    return compressed_message(name, data, stamp=stamp, frame_id=frame_id, msg_type=msg_type)


def check_colour_format(fmt: str) -> str:
    """ValueError unless ``fmt`` is the format of a colour or grey CompressedImage we decode; returns it."""
    encoding = _split_format(fmt)[0]
    if encoding in DEPTH_ENCODINGS:
        raise ValueError(f"compressed image {fmt!r} carries depth ({encoding}); subscribe it as depth")
    if encoding and encoding not in _COLOUR_LIKE:
        raise ValueError(f"unsupported compressed colour encoding {encoding!r} (format {fmt!r}); supported: "
                         f"{list(_COLOUR_LIKE)}")
    return fmt


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """CompressedImage of a colour or grey image -> (H, W, 3) uint8 RGB.

    Channel order follows the plugin's subscriber: BGR when the format says ``compressed bgr...`` or names no
    encoding, RGB otherwise; alpha is dropped, grey replicated, 16-bit scaled to 8. Raises ValueError for a depth
    encoding or an unknown one, :class:`CorruptPayload` when the bytes do not decode.
    """
    fmt = check_colour_format(str(msg.format))
    tail = _split_format(fmt)[1]
    image = _decode(as_uint8(msg.data), f"compressed image ({fmt!r})")
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float32) / 257.0).astype(np.uint8)
    if image.dtype != np.uint8:
        raise CorruptPayload(f"compressed image ({fmt!r}) decoded to {image.dtype}, expected 8 or 16 bits")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise CorruptPayload(f"compressed image ({fmt!r}) decoded to shape {image.shape}, expected 1, 3 or 4 channels")
    bgr_order = tail is None or "compressed bgr" in tail
    rgb = image[..., 2::-1] if bgr_order else image[..., :3]
    return np.ascontiguousarray(rgb)


# ================================================================================ depth (`compressedDepth` plugin)
def inverse_depth_params(depth_max: float = DEFAULT_DEPTH_MAX,
                         depth_quantization: float = DEFAULT_DEPTH_QUANTIZATION) -> tuple[float, float]:
    """The plugin's quantisation parameters (A, B) in float32: A = z0 (z0 + 1), B = 1 - A / depth_max."""
    z0, dmax = np.float32(depth_quantization), np.float32(depth_max)
    a = np.float32(z0 * (z0 + np.float32(1.0)))
    b = np.float32(np.float32(1.0) - a / dmax)
    return float(a), float(b)


def _depth_array(depth: np.ndarray, encoding: str) -> np.ndarray:
    """Metres (0 / NaN / inf / negative: none) -> the raw array of ``encoding`` (uint16 mm, or float32 m, NaN none)."""
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2 or depth.size == 0:
        raise ValueError(f"depth must have shape (H, W), got {depth.shape}")
    valid = np.isfinite(depth) & (depth > 0)
    if encoding == "16UC1":
        mm = np.where(valid, np.round(depth * 1000.0), 0.0)
        return np.where(mm > np.iinfo(np.uint16).max, 0.0, mm).astype(np.uint16)
    if encoding == "32FC1":
        return np.where(valid, depth, np.nan).astype(np.float32)
    raise ValueError(f"compressedDepth encoding must be one of {DEPTH_ENCODINGS}, got {encoding!r}")


def encode_compressed_depth(raw: np.ndarray, encoding: str = "16UC1", *, depth_max: float = DEFAULT_DEPTH_MAX,
                            depth_quantization: float = DEFAULT_DEPTH_QUANTIZATION,
                            png_level: int = DEFAULT_PNG_LEVEL) -> tuple[str, bytes]:
    """A raw depth image (16UC1: (H, W) uint16 mm; 32FC1: (H, W) float32 m) -> (format, bytes) exactly as the
    ``compressedDepth`` plugin writes them in PNG mode (see the module docstring)."""
    cv2 = _cv2()
    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.size == 0:
        raise ValueError(f"depth must have shape (H, W), got {raw.shape}")
    params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)]
    if encoding == "16UC1":
        if raw.dtype != np.uint16:
            raise ValueError(f"16UC1 needs uint16 millimetres, got {raw.dtype}")
        limit = np.uint16(min(int(float(depth_max) * 1000.0), 65535))  # the plugin: (unsigned short)(depth_max * 1000)
        pixels = np.where(raw > limit, np.uint16(0), raw).astype(np.uint16)
        header = CONFIG_HEADER.pack(INV_DEPTH, 0.0, 0.0)
    elif encoding == "32FC1":
        if raw.dtype != np.float32:
            raise ValueError(f"32FC1 needs float32 metres, got {raw.dtype}")
        a, b = inverse_depth_params(depth_max, depth_quantization)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            keep = raw < np.float32(depth_max)                       # NaN compares False: stored as 0
            inverse = np.float32(a) / raw + np.float32(b)
        # C++ converts the float to unsigned short by truncation; out-of-range (d <= ~A/65535) saturates here.
        inverse = np.where(keep & np.isfinite(inverse), np.clip(inverse, 0, 65535), 0)
        pixels = inverse.astype(np.uint16)
        header = CONFIG_HEADER.pack(INV_DEPTH, a, b)
    else:
        raise ValueError(f"compressedDepth encoding must be one of {DEPTH_ENCODINGS}, got {encoding!r}")
    ok, buf = cv2.imencode(".png", pixels, params)
    if not ok:  # pragma: no cover
        raise ValueError("OpenCV could not encode the depth image as png")
    return f"{encoding}; compressedDepth png", header + buf.tobytes()


def depth_to_compressed_depth(depth: np.ndarray, encoding: str = "16UC1", *, stamp: Any = None, frame_id: str = "",
                              msg_type: type | None = None, **options) -> Any:
    """(H, W) depth in metres -> sensor_msgs/CompressedImage on ``<depth>/compressedDepth`` (16UC1 mm or 32FC1
    inverse depth; ``options``: depth_max, depth_quantization, png_level)."""
    name, data = encode_compressed_depth(_depth_array(depth, encoding), encoding, **options)
    return compressed_message(name, data, stamp=stamp, frame_id=frame_id, msg_type=msg_type)


def check_depth_format(fmt: str) -> tuple[str, str]:
    """(layout, encoding) of a depth CompressedImage's format: layout "compressedDepth" (header + PNG) or "png"
    (16UC1 through the plain ``compressed`` plugin). ValueError for anything else, RVL included, saying why."""
    encoding, tail = _split_format(fmt)
    if tail is None:  # the oldest compressedDepth wrote the bare encoding (the plugin reads it all as one)
        encoding = fmt.strip()
    if tail is not None and COMPRESSED_DEPTH_TRANSPORT not in tail:
        if encoding == "16UC1" and "png compressed" in tail:
            return "png", encoding
        raise ValueError(f"unsupported compressed depth format {fmt!r}: publish it with the compressedDepth plugin "
                         f"(topic <depth>/compressedDepth)")
    if tail is not None and "compressedDepth rvl" in tail:
        raise ValueError(f"compressedDepth RVL ({fmt!r}) is not supported: set the publisher's "
                         "<topic>.compressedDepth.format parameter to png")
    if tail is not None and "compressedDepth " in tail and "compressedDepth png" not in tail:
        raise ValueError(f"unsupported compressedDepth format {fmt!r}; expected png")
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"unsupported compressedDepth encoding {encoding or '(none)'!r} in {fmt!r}; "
                         f"expected one of {DEPTH_ENCODINGS}")
    return COMPRESSED_DEPTH_TRANSPORT, encoding


def compressed_to_depth(msg: Any) -> np.ndarray:
    """CompressedImage of depth -> (H, W) float32 metres, 0 where there is none.

    Reads the ``compressedDepth`` layout (header + PNG, 16UC1 or 32FC1) and, for depth sent through the plain
    ``compressed`` plugin, a 16UC1 PNG (``"16UC1; png compressed "``). Raises ValueError for other encodings and
    for RVL, :class:`CorruptPayload` for bytes that do not decode.
    """
    fmt = str(msg.format)
    layout, encoding = check_depth_format(fmt)
    data = as_uint8(msg.data)
    if layout == "png":
        image = _decode(data, f"compressed depth ({fmt!r})")
        if image.dtype != np.uint16 or image.ndim != 2:
            raise CorruptPayload(f"compressed depth ({fmt!r}) decoded to {image.dtype} {image.shape}, "
                                 "expected one 16-bit channel")
        return image.astype(np.float32) * np.float32(1e-3)
    if data.size <= CONFIG_HEADER.size:
        raise CorruptPayload(f"compressedDepth ({fmt!r}): {data.size} bytes, not even the "
                             f"{CONFIG_HEADER.size}-byte header and an image")
    _, a, b = CONFIG_HEADER.unpack(data[:CONFIG_HEADER.size].tobytes())
    image = _decode(data[CONFIG_HEADER.size:], f"compressedDepth ({fmt!r})")
    if image.dtype != np.uint16 or image.ndim != 2:
        raise CorruptPayload(f"compressedDepth ({fmt!r}) decoded to {image.dtype} {image.shape}, "
                             "expected one 16-bit channel")
    if encoding == "16UC1":
        return image.astype(np.float32) * np.float32(1e-3)
    if not (np.isfinite(a) and np.isfinite(b)) or a == 0:
        raise CorruptPayload(f"compressedDepth ({fmt!r}): bad quantisation parameters A={a}, B={b}")
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.float32(a) / (image.astype(np.float32) - np.float32(b))
    valid = (image != 0) & np.isfinite(depth) & (depth > 0)
    return np.where(valid, depth, np.float32(0.0)).astype(np.float32)
