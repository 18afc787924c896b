"""Camera conventions checked against numbers derived by hand from pytorch3d's documented formulas."""
import math

import numpy as np
import pytest
import torch

from engine import rll
from engine.render.cameras import FoVPerspectiveCamera, look_at_view_transform

S = 1 / math.tan(math.radians(30))  # FoV 60
H = 0.5 * math.sqrt(2)


def test_topfront_rotation_and_translation():
    # C = 2 (cos45 sin315, sin45, cos45 cos315) = (-1, sqrt2, 1); z = -C/2; x = up x z; y = z x x; T = -C R.
    R, T = look_at_view_transform(2, 45, 315)
    expected_R = np.array([[-H, 0.5, 0.5], [0.0, H, -H], [-H, -0.5, -0.5]])
    np.testing.assert_allclose(R[0], expected_R, atol=1e-6)
    np.testing.assert_allclose(T[0], [0, 0, 2], atol=1e-6)


def test_bottomfront_offsets_and_projected_pixels():
    camera = rll.PRESETS["body"].cameras()
    np.testing.assert_allclose(camera.T[1], [0, 0.3, 2], atol=1e-6)  # bottomfront: T[1] += 0.3
    np.testing.assert_allclose(camera.R[1], [[-H, -0.5, 0.5], [0, H, H], [-H, 0.5, -0.5]], atol=1e-6)
    origin = camera.transform_points_screen(torch.zeros(1, 3), (1024, 1024))
    # origin in view space: (0, 0.3, 2) -> ndc_y = S * 0.15 -> row = 511.5 - 512 * ndc_y
    np.testing.assert_allclose(origin[1, 0], [511.5, 511.5 - 512 * S * 0.15, 2.0], atol=1e-3)
    np.testing.assert_allclose(origin[0, 0], [511.5, 511.5, 2.0], atol=1e-3)


def test_topfront_projects_a_point_on_the_left():
    camera = rll.PRESETS["body"].cameras()
    screen = camera.transform_points_screen(torch.tensor([[0.5, 0.0, 0.0]]), (1024, 1024))
    # view = (0.5 * -H, 0.5 * 0.5, 0.5 * 0.5 + 2) = (-0.35355, 0.25, 2.25)
    ndc_x, ndc_y = S * -0.5 * H / 2.25, S * 0.25 / 2.25
    np.testing.assert_allclose(screen[0, 0], [511.5 - 512 * ndc_x, 511.5 - 512 * ndc_y, 2.25], atol=1e-3)


def test_front_camera_sees_the_bodys_left_on_the_image_right():
    camera = FoVPerspectiveCamera.look_at(2.0, 0.0, 0.0)
    left, up = camera.transform_points_screen(torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.3, 0.0]]), (100, 100))[0]
    assert left[0] > 49.5 and up[1] < 49.5


def test_camera_centres_and_opencv_equivalence():
    camera = FoVPerspectiveCamera.look_at([2, 2, 1.5], [45, 315, 330], [315, 135, 225], [0.0, 0.1, 0.0], [0.0, 0.3, 0.0])
    no_offset = FoVPerspectiveCamera.look_at(2, 45, 315)
    np.testing.assert_allclose(no_offset.camera_centres()[0], [-1, math.sqrt(2), 1], atol=1e-6)
    points = torch.randn(50, 3) * 0.3
    for size in ((480, 640), (512, 512)):
        ours = camera.transform_points_screen(points, size)
        opencv = camera.to_opencv(size).project(points)
        torch.testing.assert_close(ours, opencv, atol=1e-3, rtol=1e-4)


def test_camera_conditioning_inputs():
    cond = rll.PRESETS["body"].camera_conditioning()
    np.testing.assert_allclose(cond[1], [0.2, 315 / 360, 315 / 360, 0.5, 0.65], atol=1e-6)
    assert [v.name for v in rll.PRESETS["body"].views] == ["topfront", "bottomfront", "topback", "bottomback"]
    with pytest.raises(Exception, match="unknown view preset"):
        rll.get_preset("sideways")


def _pytorch3d_float32(dist, elev, azim):
    """A plain numpy float32 statement of pytorch3d's look_at_view_transform (degrees, at 0, up +Y)."""
    f = np.float32
    e, a = f(math.pi / 180.0) * f(elev), f(math.pi / 180.0) * f(azim)
    c = np.array([f(dist) * np.cos(e) * np.sin(a), f(dist) * np.sin(e), f(dist) * np.cos(e) * np.cos(a)], f)
    unit = lambda v: (v / max(f(np.linalg.norm(v)), f(1e-5))).astype(f)
    z = unit(-c)
    x = unit(np.cross(np.array([0, 1, 0], f), z))
    y = unit(np.cross(z, x))
    if np.all(np.abs(x) <= 5e-3):
        x = unit(np.cross(y, z))
    R = np.stack([x, y, z], axis=1)
    return R, -(c @ R)


@pytest.mark.parametrize("elev", [0, 30, 45, 89, 90, 91, 180, 269, 270, 271, 315, 330, -90, 450])
@pytest.mark.parametrize("azim", [0, 45, 135, 180, 225, 315])
def test_every_elevation_matches_pytorch3d_float32(elev, azim):
    R, T = look_at_view_transform(2, elev, azim)
    expected_R, expected_T = _pytorch3d_float32(2, elev, azim)
    np.testing.assert_allclose(R[0].numpy(), expected_R, atol=2e-6)
    np.testing.assert_allclose(T[0].numpy(), expected_T, atol=2e-6)
    assert R.dtype == torch.float32


def test_poles_keep_the_azimuth_as_float32_pytorch3d_does():
    # Derived by hand. float32(pi/180) * 270 = 4.712389, whose cos is +1.19e-8 (not 0), so at azimuth 0
    # C = (0, -2, 2.4e-8) and z = (0, 1, -1.2e-8); up x z = (-1.2e-8, 0, 0), divided by eps 1e-5 ->
    # (-1.2e-3, 0, 0), within 5e-3 of 0, so y = normalize(z x x) = (0, 0, 1) and x = y x z = (-1, 0, 0).
    R0, _ = look_at_view_transform(2, 270, 0)      # InteractVLM's PIAD "bottom" view
    np.testing.assert_allclose(R0[0], [[-1, 0, 0], [0, 0, 1], [0, 1, 0]], atol=1e-5)
    # An exact computation loses the azimuth (up x z = 0) and, taking x = (1, 0, 0), gives the image
    # rotated 180 degrees; at azimuth 180 float32 keeps the azimuth: x = (1, 0, 0), y = (0, 0, -1).
    R180, _ = look_at_view_transform(2, 270, 180)
    np.testing.assert_allclose(R180[0], [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-5)
    np.testing.assert_allclose(R180[0][:, :2], -R0[0][:, :2], atol=1e-5)
    # 90 deg: cos is -4.37e-8 -> up x z / eps = (4.4e-3, 0, 0), rebuilt: x = (1, 0, 0), y = (0, 0, 1)
    top, _ = look_at_view_transform(2, 90, 0)
    np.testing.assert_allclose(top[0], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-5)
