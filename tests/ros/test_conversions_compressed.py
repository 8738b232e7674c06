"""mirage_ros.conversions.compressed against messages built byte for byte as image_transport's plugins build them.

The ``plugin_*`` builders below transcribe ros-perception/image_transport_plugins (compressed_publisher.cpp,
compressed_depth_image_transport/codec.cpp, compression_common.h) step by step, independently of the module
under test: the 12-byte ConfigHeader ``{int32 format = INV_DEPTH (0); float depthParam[2]}`` then
``cv::imencode(".png", ..., {IMWRITE_PNG_COMPRESSION, 3})``; JPEG via ``cv::imencode(".jpg", bgr, {QUALITY, q})``.
Readers run on plain namespaces (rosbags-like messages); rclpy messages are marked ``ros``.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace as NS

import cv2
import numpy as np
import pytest

from mirage_ros.conversions import compressed as cc

PNG = [cv2.IMWRITE_PNG_COMPRESSION, 3]


def message(fmt: str, data: bytes) -> NS:
    return NS(header=NS(stamp=NS(sec=3, nanosec=7), frame_id="cam"), format=fmt, data=data)


def plugin_depth_16uc1(mm: np.ndarray, depth_max: float = 10.0, junk_params=(1.5, -7.25)) -> NS:
    """encodeCompressedDepthImage, 16-bit branch, format png. The plugin never sets depthParam here (uninitialised
    memory): ``junk_params`` stands in for it."""
    image = mm.copy()
    depth_max_ushort = int(depth_max * 1000.0)  # static_cast<unsigned short>(depth_max * 1000.0f)
    image[image > depth_max_ushort] = 0
    ok, png = cv2.imencode(".png", image, PNG)
    assert ok
    header = struct.pack("<i", 0) + struct.pack("<ff", *junk_params)
    return message("16UC1; compressedDepth png", header + png.tobytes())


def plugin_depth_32fc1(depth: np.ndarray, depth_max: float = 10.0, depth_quantization: float = 100.0) -> NS:
    """encodeCompressedDepthImage, 32-bit branch, format png: inverse depth in float arithmetic."""
    z0, dmax = np.float32(depth_quantization), np.float32(depth_max)
    a = np.float32(z0 * (z0 + np.float32(1.0)))
    b = np.float32(np.float32(1.0) - a / dmax)
    inv = np.zeros(depth.shape, np.uint16)
    for idx, d in np.ndenumerate(depth.astype(np.float32)):
        if d < dmax:  # NaN compares false
            inv[idx] = int(np.float32(a / d + b))  # float -> unsigned short truncates
    ok, png = cv2.imencode(".png", inv, PNG)
    assert ok
    return message("32FC1; compressedDepth png", struct.pack("<iff", 0, a, b) + png.tobytes())


def plugin_colour(rgb: np.ndarray, fmt: str, encoding: str = "rgb8", quality: int = 95) -> NS:
    """CompressedPublisher::publish for a colour image: cv_bridge to bgr8, then imencode."""
    bgr = np.ascontiguousarray(rgb[..., ::-1]) if encoding == "rgb8" else rgb
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        name = f"{encoding}; jpeg compressed bgr8"
    else:
        ok, buf = cv2.imencode(".png", bgr, PNG)
        name = f"{encoding}; png compressed bgr8"
    assert ok
    return message(name, buf.tobytes())


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(12, 20, 3), dtype=np.uint8)


@pytest.fixture
def mm():
    rng = np.random.default_rng(1)
    out = rng.integers(300, 12000, size=(12, 20)).astype(np.uint16)
    out[0, :5] = 0  # no depth
    return out


# ------------------------------------------------------------------------------------------- compressedDepth
def test_16uc1_decodes_the_plugins_bytes_and_encodes_the_same_bytes(mm):
    msg = plugin_depth_16uc1(mm)
    depth = cc.compressed_to_depth(msg)
    expected = np.where(mm > 10000, 0, mm).astype(np.float32) * np.float32(1e-3)
    np.testing.assert_array_equal(depth, expected)
    assert depth.dtype == np.float32 and (depth[0, :5] == 0).all() and (depth[mm > 10000] == 0).all()
    fmt, data = cc.encode_compressed_depth(mm, "16UC1")
    assert fmt == msg.format
    assert data[12:] == msg.data[12:]  # the PNG byte for byte
    assert struct.unpack("<iff", data[:12]) == (0, 0.0, 0.0)  # format INV_DEPTH; parameters zeroed, not junk


def test_32fc1_inverse_depth_matches_the_plugin_byte_for_byte():
    rng = np.random.default_rng(2)
    depth = rng.uniform(0.3, 9.5, size=(10, 16)).astype(np.float32)
    depth[0, 0], depth[0, 1], depth[0, 2] = np.nan, 12.0, 10.0  # invalid, beyond and at depth_max
    msg = plugin_depth_32fc1(depth)
    fmt, data = cc.encode_compressed_depth(depth, "32FC1")
    assert fmt == msg.format == "32FC1; compressedDepth png"
    assert data == msg.data
    decoded = cc.compressed_to_depth(msg)
    a, b = cc.inverse_depth_params()
    assert struct.unpack("<iff", data[:12])[1:] == (np.float32(a), np.float32(b))
    assert (decoded[0, :3] == 0).all()
    valid = np.isfinite(depth) & (depth < 10.0)
    step = depth[valid] ** 2 / a  # one quantisation step of inverse depth, in metres
    assert (np.abs(decoded[valid] - depth[valid]) <= step * 1.01 + 1e-6).all()
    assert decoded.dtype == np.float32 and decoded.shape == depth.shape


def test_depth_in_metres_to_compressed_depth_round_trip(mm):
    metres = mm.astype(np.float64) / 1000.0
    metres[1, 1] = np.nan
    msg = message(*cc.encode_compressed_depth(cc._depth_array(metres, "16UC1"), "16UC1"))
    back = cc.compressed_to_depth(msg)
    expected = np.where((mm <= 10000) & np.isfinite(metres), mm / 1000.0, 0.0)
    assert back[1, 1] == 0 and back[0, 0] == 0
    np.testing.assert_allclose(back, expected, atol=1e-6)


@pytest.mark.parametrize("fmt", ["16UC1", "16UC1; compressedDepth"])  # the two older format strings: png
def test_older_format_strings_mean_png(mm, fmt):
    msg = plugin_depth_16uc1(mm)
    msg.format = fmt
    np.testing.assert_array_equal(cc.compressed_to_depth(msg)[mm <= 10000], mm[mm <= 10000] * np.float32(1e-3))


def test_depth_through_the_plain_compressed_plugin(mm):
    ok, png = cv2.imencode(".png", mm, PNG)
    msg = message("16UC1; png compressed ", png.tobytes())
    np.testing.assert_array_equal(cc.compressed_to_depth(msg), mm.astype(np.float32) * np.float32(1e-3))


@pytest.mark.parametrize("fmt, word", [
    ("16UC1; compressedDepth rvl", "RVL"), ("32FC1; compressedDepth tiff", "png"),
    ("mono8; compressedDepth png", "encoding"),
    ("rgb8; jpeg compressed bgr8", "compressedDepth"),
])
def test_unsupported_depth_formats_say_why(mm, fmt, word):
    msg = plugin_depth_16uc1(mm)
    msg.format = fmt
    with pytest.raises(ValueError, match=word) as info:
        cc.compressed_to_depth(msg)
    assert not isinstance(info.value, cc.CorruptPayload)


def corrupt_depth_payloads(mm):
    good = plugin_depth_16uc1(mm).data
    ok, png8 = cv2.imencode(".png", (mm // 100).astype(np.uint8), PNG)
    return {
        "empty": b"",
        "header only": good[:12],
        "truncated png": good[: len(good) // 2],
        "garbage": good[:12] + bytes(range(256)) * 4,
        "8-bit png": good[:12] + png8.tobytes(),
    }


@pytest.mark.parametrize("case", ["empty", "header only", "truncated png", "garbage", "8-bit png"])
def test_corrupt_depth_payloads_raise_corrupt_payload(mm, case):
    data = corrupt_depth_payloads(mm)[case]
    with pytest.raises(cc.CorruptPayload):
        cc.compressed_to_depth(message("16UC1; compressedDepth png", data))


def test_32fc1_with_bad_quantisation_is_corrupt():
    msg = plugin_depth_32fc1(np.full((4, 4), 2.0, np.float32))
    data = bytearray(msg.data)
    data[4:12] = struct.pack("<ff", 0.0, float("nan"))
    with pytest.raises(cc.CorruptPayload, match="quantisation"):
        cc.compressed_to_depth(message(msg.format, bytes(data)))


# ------------------------------------------------------------------------------------------- compressed colour
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_png_colour_is_exact_in_either_declared_order(rgb, encoding):
    pixels = rgb if encoding == "rgb8" else np.ascontiguousarray(rgb[..., ::-1])
    msg = plugin_colour(pixels, "png", encoding)
    np.testing.assert_array_equal(cc.compressed_to_rgb(msg), rgb)
    fmt, data = cc.encode_compressed(pixels, encoding, "png")
    assert (fmt, data) == (msg.format, msg.data)


def test_jpeg_colour_matches_the_plugin_bytes(rgb):
    smooth = np.repeat(np.repeat(rgb[:3, :5], 16, axis=0), 16, axis=1)  # flat 16x16 macroblocks: small JPEG error
    msg = plugin_colour(smooth, "jpeg")
    assert msg.format == "rgb8; jpeg compressed bgr8"
    fmt, data = cc.encode_compressed(smooth, "rgb8", "jpeg")
    assert (fmt, data) == (msg.format, msg.data)
    out = cc.compressed_to_rgb(msg)
    assert out.shape == smooth.shape and np.abs(out.astype(int) - smooth).mean() < 12


def test_mono_and_legacy_formats(rgb):
    grey = rgb[..., 0].copy()
    fmt, data = cc.encode_compressed(grey, "mono8", "png")
    assert fmt == "mono8; png compressed "  # the plugin names no target for grey PNG (trailing space)
    np.testing.assert_array_equal(cc.compressed_to_rgb(message(fmt, data)), np.repeat(grey[..., None], 3, axis=2))
    assert cc.encode_compressed(grey, "mono8", "jpeg")[0] == "mono8; jpeg compressed mono8"
    ok, bgr_png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), PNG)
    np.testing.assert_array_equal(cc.compressed_to_rgb(message("png", bgr_png.tobytes())), rgb)  # no ';': bgr8
    ok, rgb_png = cv2.imencode(".png", rgb, PNG)  # a publisher that says its bytes are RGB ("compressed rgb8")
    np.testing.assert_array_equal(cc.compressed_to_rgb(message("rgb8; png compressed rgb8", rgb_png.tobytes())), rgb)


def test_rgba_and_16_bit_colour(rgb):
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    fmt, data = cc.encode_compressed(rgba, "rgba8", "png")
    assert fmt == "rgba8; png compressed bgr8"
    np.testing.assert_array_equal(cc.compressed_to_rgb(message(fmt, data)), rgb)
    ok, png16 = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]).astype(np.uint16) * 257, PNG)
    np.testing.assert_array_equal(cc.compressed_to_rgb(message("rgb16; png compressed bgr16", png16.tobytes())), rgb)


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff\xe0 not really a jpeg", bytes(1000)])
def test_corrupt_colour_payloads(data):
    with pytest.raises(cc.CorruptPayload):
        cc.compressed_to_rgb(message("rgb8; jpeg compressed bgr8", data))


def test_truncated_jpeg_is_corrupt_or_decodes_to_the_right_size(rgb):
    msg = plugin_colour(rgb, "jpeg")
    cut = message(msg.format, msg.data[: len(msg.data) // 3])
    try:
        out = cc.compressed_to_rgb(cut)  # libjpeg may fill a truncated scan with grey; never another size
    except cc.CorruptPayload:
        return
    assert out.shape == rgb.shape


@pytest.mark.parametrize("fmt", ["16UC1; png compressed ", "yuv422; jpeg compressed bgr8"])
def test_colour_decoder_refuses_depth_and_unknown_encodings(rgb, fmt):
    with pytest.raises(ValueError, match="depth|unsupported") as info:
        cc.compressed_to_rgb(message(fmt, plugin_colour(rgb, "png").data))
    assert not isinstance(info.value, cc.CorruptPayload)


def test_bad_encoder_input_raises():
    with pytest.raises(ValueError, match="16UC1 needs uint16"):
        cc.encode_compressed_depth(np.ones((2, 2), np.float32), "16UC1")
    with pytest.raises(ValueError, match="encoding"):
        cc.encode_compressed_depth(np.ones((2, 2), np.uint16), "8UC1")
    with pytest.raises(ValueError, match="jpeg or png"):
        cc.encode_compressed(np.zeros((2, 2, 3), np.uint8), "rgb8", "webp")
    with pytest.raises(ValueError, match="shape"):
        cc.encode_compressed(np.zeros((2, 2), np.uint8), "rgb8")


def test_helpers():
    assert cc.transport_topic("rgb/image", "compressed") == "rgb/image/compressed"
    assert cc.transport_topic("/depth/image/", "compressedDepth") == "/depth/image/compressedDepth"
    assert cc.transport_topic("rgb/image", "raw") == "rgb/image"
    with pytest.raises(ValueError):
        cc.transport_topic("x", "theora")
    assert cc.is_compressed(message("png", b"")) and not cc.is_compressed(NS(format="x", data=b"", encoding="rgb8"))
    assert cc.compressed_encoding(message("rgb8; jpeg compressed bgr8", b"")) == "rgb8"
    assert cc.compressed_encoding(message("jpeg", b"")) == ""


# ------------------------------------------------------------------------------------------- rclpy messages
@pytest.mark.ros
def test_rclpy_messages_round_trip(rgb, mm):
    from sensor_msgs.msg import CompressedImage

    msg = cc.rgb_to_compressed(rgb, "rgb8", "png", stamp=1_500_000_000, frame_id="cam")
    assert isinstance(msg, CompressedImage) and msg.header.frame_id == "cam" and msg.header.stamp.sec == 1
    np.testing.assert_array_equal(cc.compressed_to_rgb(msg), rgb)
    depth = cc.depth_to_compressed_depth(mm / 1000.0, "16UC1", stamp=2, frame_id="cam")
    assert depth.format == "16UC1; compressedDepth png"
    np.testing.assert_allclose(cc.compressed_to_depth(depth)[mm <= 10000], mm[mm <= 10000] / 1000.0, atol=1e-6)
    d32 = cc.depth_to_compressed_depth(mm / 1000.0, "32FC1")
    assert cc.compressed_to_depth(d32).shape == mm.shape
