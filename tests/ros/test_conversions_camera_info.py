"""mirage_ros.conversions.camera_info: CameraInfo <-> intrinsics (pixel centres, binning, ROI).

Readers are tested on plain namespaces (what rosbags messages look like) so they run without ROS; writers and
round trips through real rclpy messages are marked ``ros``.
"""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest
import torch

from mirage.camera import intrinsics_from_opencv
from mirage_ros import conversions as conv


def fake_info(K_cv, height, width, binning=(0, 0), roi=(0, 0, 0, 0)) -> NS:
    x, y, h, w = roi
    return NS(k=list(np.asarray(K_cv, float).reshape(-1)), height=height, width=width, binning_x=binning[0],
              binning_y=binning[1], roi=NS(x_offset=x, y_offset=y, height=h, width=w, do_rectify=False))


def test_camera_info_moves_principal_point_to_pixel_centre_convention():
    K_cv = [[500.0, 0, 319.5], [0, 510.0, 239.5], [0, 0, 1]]
    K, size = conv.camera_info_to_intrinsics(fake_info(K_cv, 480, 640), image_size=(480, 640))
    assert size == (480, 640)
    torch.testing.assert_close(K, intrinsics_from_opencv(np.array(K_cv)))
    assert K[0, 2].item() == pytest.approx(320.0) and K[1, 2].item() == pytest.approx(240.0)


def test_camera_info_binning_and_roi():
    K_cv = np.array([[400.0, 0, 199.5], [0, 400.0, 99.5], [0, 0, 1]])
    K, size = conv.camera_info_to_intrinsics(fake_info(K_cv, 200, 400, binning=(2, 2)))
    assert size == (100, 200)
    torch.testing.assert_close(K, torch.tensor([[200.0, 0, 100.0], [0, 200.0, 50.0], [0, 0, 1]]))
    K, size = conv.camera_info_to_intrinsics(fake_info(K_cv, 200, 400, roi=(10, 20, 100, 50)))
    assert size == (100, 50)
    torch.testing.assert_close(K, torch.tensor([[400.0, 0, 190.0], [0, 400.0, 80.0], [0, 0, 1]]))


def test_camera_info_rejects_uncalibrated_and_mismatched():
    with pytest.raises(ValueError, match="zero or negative focal length"):
        conv.camera_info_to_intrinsics(fake_info(np.zeros((3, 3)), 480, 640))
    with pytest.raises(ValueError, match="describes a 480x640 image but the image is 240x320"):
        conv.camera_info_to_intrinsics(fake_info(np.diag([500.0, 500.0, 1.0]), 480, 640), image_size=(240, 320))
    with pytest.raises(ValueError, match="9 entries"):
        conv.camera_info_to_intrinsics(NS(k=[1.0, 2.0], height=4, width=4))


@pytest.mark.ros
def test_rclpy_camera_info_round_trip():
    from sensor_msgs.msg import CameraInfo

    K = torch.tensor([[300.0, 0.0, 160.0], [0.0, 310.0, 120.0], [0.0, 0.0, 1.0]])
    info = conv.intrinsics_to_camera_info(K, 240, 320, stamp=7, frame_id="cam_optical")
    assert isinstance(info, CameraInfo) and info.header.frame_id == "cam_optical"
    assert info.k[2] == pytest.approx(159.5) and info.p[3] == 0.0 and list(info.d) == [0.0] * 5
    K2, size = conv.camera_info_to_intrinsics(info, image_size=(240, 320))
    assert size == (240, 320)
    torch.testing.assert_close(K2, K)
