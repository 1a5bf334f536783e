"""Depth → 3D region positions: encodings, holes, back-projection, pairing by stamp, markers, the RGB-D
synthetic camera and its stable ids."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from osprey_ros.depth import PinholeCamera, depth_to_metres, region_position
from osprey_ros.depth_input import DepthInput
from osprey_ros.image_conversion import ImageConversionError, numpy_to_image
from osprey_ros.markers import region_markers
from osprey_ros.synthetic_camera import INVALID_COLUMNS, ShapesScene, synthetic_pinhole

CAMERA = PinholeCamera(fx=100.0, fy=120.0, cx=40.0, cy=30.0, width=80, height=60)


def test_16uc1_is_millimetres_and_zero_is_no_return() -> None:
    raw = np.array([[0, 1000], [2500, 65535]], np.uint16)
    metres = depth_to_metres(numpy_to_image(raw, "16UC1"))
    assert np.isnan(metres[0, 0])
    np.testing.assert_allclose(metres[~np.isnan(metres)], [1.0, 2.5, 65.535], rtol=1e-6)


def test_32fc1_is_metres_and_nan_inf_and_negative_are_no_return() -> None:
    raw = np.array([[np.nan, 1.25, np.inf, -1.0, 0.0, 3.5]], np.float32)
    metres = depth_to_metres(numpy_to_image(raw, "32FC1"))
    np.testing.assert_array_equal(np.isnan(metres), [[True, False, True, True, True, False]])
    np.testing.assert_allclose(metres[0, [1, 5]], [1.25, 3.5])


def test_big_endian_and_padded_rows_are_read() -> None:
    raw = np.array([[1000, 2000, 3000]], np.uint16)
    msg = numpy_to_image(raw, "16UC1", step=10)
    msg.is_bigendian = 1
    data = np.zeros((1, 10), np.uint8)
    data[0, :6] = raw.astype(">u2").view(np.uint8)
    msg.data = data.tobytes()
    np.testing.assert_allclose(depth_to_metres(msg), [[1.0, 2.0, 3.0]])


@pytest.mark.parametrize("encoding", ["rgb8", "mono8", "32FC3"])
def test_a_colour_or_unknown_encoding_is_a_clear_error(encoding: str) -> None:
    msg = numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8")
    msg.encoding = encoding
    with pytest.raises(ImageConversionError, match=r"16UC1 .*32FC1"):
        depth_to_metres(msg)


def test_truncated_depth_is_a_clear_error() -> None:
    msg = numpy_to_image(np.ones((4, 4), np.uint16), "16UC1")
    msg.data = bytes(msg.data)[:10]
    with pytest.raises(ImageConversionError, match="depth image: truncated"):
        depth_to_metres(msg)


def test_a_flat_card_back_projects_to_its_centre_and_size() -> None:
    depth = np.full((60, 80), 2.0, np.float32)
    mask = np.zeros((60, 80), bool)
    mask[20:41, 50:71] = True  # u 50..70, v 20..40: centre (60, 30)
    place = region_position(depth, mask, CAMERA, percentiles=(0.0, 100.0))
    assert place.valid_pixels == 21 * 21
    assert place.centroid == pytest.approx(((60 - 40) * 2 / 100, (30 - 30) * 2 / 120, 2.0))
    assert place.extent == pytest.approx((20 * 2 / 100, 20 * 2 / 120, 0.0))


def test_edge_pixels_on_the_background_do_not_move_the_centre_or_stretch_the_extent() -> None:
    depth = np.full((60, 80), 2.0, np.float32)
    mask = np.zeros((60, 80), bool)
    mask[10:50, 10:50] = True
    depth[10, 10:50] = 9.0  # one bleeding row out of 40: 2.5 % of the mask, outside the 5..95 percentiles
    place = region_position(depth, mask, CAMERA)
    assert place.centroid is not None and place.extent is not None
    assert place.centroid[2] == pytest.approx(2.0)
    assert place.extent[2] == pytest.approx(0.0)


def test_a_region_without_valid_depth_has_no_position_and_says_how_many_pixels() -> None:
    depth = np.full((60, 80), np.nan, np.float32)
    depth[0, :5] = 1.0
    mask = np.zeros((60, 80), bool)
    mask[0, :30] = True
    place = region_position(depth, mask, CAMERA, min_pixels=20)
    assert place.centroid is None and place.extent is None and place.valid_pixels == 5
    assert region_position(depth, np.zeros_like(mask), CAMERA).valid_pixels == 0


def test_camera_info_without_intrinsics_is_refused() -> None:
    with pytest.raises(ValueError, match="no intrinsics"):
        PinholeCamera.from_camera_info(CameraInfo())
    assert PinholeCamera.from_camera_info(CAMERA.to_camera_info(Header())) == CAMERA


def header(sec: int, nanosec: int = 0) -> Header:
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id="cam")


def test_depth_is_paired_by_stamp_within_slop_and_camera_info_falls_back_to_the_newest() -> None:
    depth_input = DepthInput(keep=4, slop=0.05, percentiles=(5.0, 95.0), min_pixels=1)
    plane = numpy_to_image(np.full((60, 80), 1500, np.uint16), "16UC1", header=header(10))
    depth_input.add_depth(10_000_000_000, plane)
    depth_input.add_camera_info(9_000_000_000, CAMERA.to_camera_info(header(9)))
    mask = np.zeros((60, 80), bool)
    mask[:, 40] = True
    positions = depth_input.positions(10_020_000_000, [mask])  # 20 ms later: the same frame
    assert positions is not None and positions[0].centroid == pytest.approx((0.0, 0.0, 1.5), abs=0.02)
    assert depth_input.positions(10_200_000_000, [mask]) is None  # 200 ms: another frame's depth
    assert depth_input.stats.frames_without_depth == 1


def test_depth_of_another_size_than_the_image_is_an_error_that_is_counted() -> None:
    depth_input = DepthInput(keep=4, slop=0.05, percentiles=(5.0, 95.0), min_pixels=1)
    depth_input.add_depth(1, numpy_to_image(np.full((30, 40), 1500, np.uint16), "16UC1"))
    depth_input.add_camera_info(1, CAMERA.to_camera_info(header(0)))
    with pytest.raises(ValueError, match="not the camera image's 80x60"):
        depth_input.positions(1, [np.ones((60, 80), bool)])
    assert depth_input.stats.depth_errors == 1


def test_markers_clear_the_last_frame_then_draw_a_box_and_a_label_per_region() -> None:
    array = region_markers(header(3), [(7, "red circle", Point(x=0.1, y=0.2, z=1.5), Vector3(x=0.3, y=0.0, z=0.1))])
    first, box, text = array.markers
    assert first.action == Marker.DELETEALL
    assert (box.type, box.id, box.pose.position.z) == (Marker.CUBE, 14, 1.5)
    assert box.scale.y > 0  # a flat region still shows
    assert (text.type, text.id, text.text) == (Marker.TEXT_VIEW_FACING, 15, "7: red circle")
    assert text.pose.position.y < box.pose.position.y  # above the box: optical y points down
    assert box.header.frame_id == "cam" and box.color.a > 0


def test_synthetic_depth_puts_each_shape_at_its_card_depth_and_holes_on_the_left() -> None:
    scene = ShapesScene(160, 120, 3, seed=1)
    _, masks, _, ids = scene.step()
    depth = scene.depth_image(masks, ids)
    for mask, index in zip(masks, ids, strict=True):
        np.testing.assert_allclose(depth[mask & ~np.isnan(depth)], scene.shape_depth(index))
    assert np.isnan(depth[:, :INVALID_COLUMNS]).all()
    camera = synthetic_pinhole(160, 120)
    assert camera.cx == pytest.approx(79.5) and camera.fx == camera.fy


def test_synthetic_camera_keeps_a_shapes_id_while_it_is_hidden_and_after() -> None:
    scene = ShapesScene(160, 120, 3, seed=1)
    scene.velocity[:] = 0
    top = scene.shapes[2]
    below = scene.shapes[0]
    top.x, top.y, top.size = 80, 60, 70  # the top shape covers the whole middle
    below.x, below.y, below.size = 80, 60, 15
    _, _, shapes, hidden_ids = scene.step()
    assert 0 not in hidden_ids and 2 in hidden_ids
    top.x = 10_000  # the cover moves away
    _, _, shapes, ids = scene.step()
    assert 0 in ids and shapes[ids.index(0)] is below


@pytest.mark.parametrize("value", [[95.0, 5.0], [5.0], [-1.0, 50.0], [5.0, 101.0]])
def test_bad_depth_percentiles_are_refused(value: list[float]) -> None:
    from osprey_ros.parameters import check_value

    with pytest.raises(ValueError, match="depth_percentiles"):
        check_value("depth_percentiles", value)
    check_value("depth_percentiles", [10.0, 90.0])


def test_a_720p_frame_with_16_regions_gets_every_position() -> None:
    """The real size: 1280x720 depth in millimetres, 16 cards at 16 depths, positions back where they are."""
    camera = PinholeCamera(fx=900.0, fy=900.0, cx=639.5, cy=359.5, width=1280, height=720)
    depth = np.full((720, 1280), 5000, np.uint16)
    masks = []
    for i in range(16):
        mask = np.zeros((720, 1280), bool)
        y, x = 40 + 160 * (i // 4), 60 + 300 * (i % 4)
        mask[y : y + 120, x : x + 200] = True
        depth[mask] = 1000 + 100 * i
        masks.append(mask)
    depth_input = DepthInput(keep=2, slop=0.05, percentiles=(5.0, 95.0), min_pixels=20)
    depth_input.add_depth(7, numpy_to_image(depth, "16UC1"))
    depth_input.add_camera_info(7, camera.to_camera_info(header(0)))
    positions = depth_input.positions(7, masks)
    assert positions is not None
    for i, (mask, place) in enumerate(zip(masks, positions, strict=True)):
        ys, xs = np.nonzero(mask)
        z = 1.0 + 0.1 * i
        assert place.valid_pixels == 120 * 200 and place.centroid is not None
        assert place.centroid == pytest.approx(
            ((np.median(xs) - camera.cx) * z / camera.fx, (np.median(ys) - camera.cy) * z / camera.fy, z), abs=1e-3
        )
