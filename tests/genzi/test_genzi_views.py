"""GenZI views on hand-computed cases: the Fibonacci candidates, the camera geometry, patch visibility
(front-facing, occluded), ranking with ties spread around the point, and the no-view error."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from engine.errors import InputError
from engine.genzi import views
from engine.genzi.scenes import checked_scene, check_point
from engine.genzi.views import ViewConfig, candidate_directions, cameras_at, fibonacci_directions, rank_views, select_views

SMALL = ViewConfig()  # 512 px: only the patch window is rasterized


def _grid_plane(half: float, step: float, y: float = 0.0):
    """A square y = const plane facing +Y, gridded."""
    count = int(round(2 * half / step)) + 1
    xs = np.linspace(-half, half, count)
    x, z = np.meshgrid(xs, xs, indexing="ij")
    vertices = np.column_stack([x.ravel(), np.full(x.size, y), z.ravel()])
    index = np.arange(x.size).reshape(count, count)
    a, b, c, d = index[:-1, :-1].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel(), index[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, c, b], 1), np.stack([a, d, c], 1)])  # counter-clockwise seen from +Y
    return vertices, faces


def test_fibonacci_sphere_is_genzis():
    directions = fibonacci_directions(256)
    assert directions.shape == (256, 3)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0)
    np.testing.assert_allclose(directions[0], (1.0, 1.0, 0.0) * np.array([0, 1, 0]), atol=1e-12)
    np.testing.assert_allclose(directions[-1, 1], -1.0)
    assert directions[100, 1] == pytest.approx(1 - 200 / 255)
    golden = math.pi * (math.sqrt(5) - 1)
    radius = math.sqrt(1 - directions[1, 1] ** 2)
    np.testing.assert_allclose(directions[1, [0, 2]], (radius * math.cos(golden), radius * math.sin(golden)))


def test_candidates_keep_the_0_to_30_degree_band_and_the_normal_cone():
    up = candidate_directions((0.0, 1.0, 0.0))
    assert len(up) == 64  # 64 of 256 lie strictly between 0 and 30 degrees of elevation with Y up
    elevation = np.degrees(np.arcsin(up[:, 1]))
    assert elevation.min() > 0 and elevation.max() < 30
    # With the normal pointing down, every band direction is 90-120 degrees from it: all kept.
    assert len(candidate_directions((0.0, -1.0, 0.0))) == 64
    # A wall facing +X drops the directions more than 135 degrees from +X (x < -cos 45 deg * horizontal part).
    wall = candidate_directions((1.0, 0.0, 0.0))
    assert (np.degrees(np.arccos(wall[:, 0])) < 135).all()
    assert len(wall) == int((np.degrees(np.arccos(np.clip(up[:, 0], -1, 1))) < 135).sum()) < 64


def test_cameras_sit_at_distance_two_and_look_at_the_point():
    point = np.array([0.3, 0.5, -1.0])
    directions = candidate_directions((0.0, 1.0, 0.0))[:5]
    cameras = cameras_at(point, directions)
    np.testing.assert_allclose(cameras.camera_centres().numpy(), point + 2 * directions, atol=1e-5)
    centre = cameras.transform_points_screen(torch.tensor(point[None], dtype=torch.float32), (512, 512))
    np.testing.assert_allclose(centre[..., :2].numpy(), 255.5, atol=1e-3)
    np.testing.assert_allclose(centre[..., 2].numpy(), 2.0, atol=1e-5)
    above = cameras.transform_points_screen(torch.tensor((point + (0, 0.1, 0))[None], dtype=torch.float32), (512, 512))
    assert (above[..., 1] < 255.5).all()  # up in the world is up in the image
    assert cameras.fov == 60


def test_open_floor_patch_is_fully_visible_from_every_candidate():
    scene = checked_scene("floor", *_grid_plane(3.0, 0.5))
    selection = select_views(scene, (0.1, 0.0, 0.2), SMALL)
    assert len(selection.candidate_ratios) == 64
    elevation = np.degrees(np.arcsin(selection.candidates[:, 1]))
    np.testing.assert_allclose(selection.candidate_ratios[elevation > 11], 1.0)
    # At grazing elevations (below 1 degree) the 3 cm patch faces are thinner than a pixel, and
    # rasterization misses most of them, as in the release.
    assert (selection.candidate_ratios[elevation < 1] < 0.4).all()
    assert len(selection.ratios) == 16 and (selection.ratios == 1.0).all()
    # All 16 tie at 1.0: the spread rule picks them around the point, not bunched on one side.
    azimuth = np.sort(np.degrees(np.arctan2(selection.directions[:, 0], selection.directions[:, 2])) % 360)
    assert np.diff(np.concatenate([azimuth, azimuth[:1] + 360])).max() < 45
    # Refinement split the 0.5 m floor faces: the patch is a disc of about 0.15 m radius.
    centroids = selection.patch_triangles.mean(axis=1)
    assert np.linalg.norm(centroids - (0.1, 0.0, 0.2), axis=1).max() < 0.15 + 0.05
    area = 0.5 * np.linalg.norm(np.cross(selection.patch_triangles[:, 1] - selection.patch_triangles[:, 0],
                                         selection.patch_triangles[:, 2] - selection.patch_triangles[:, 0]), axis=1).sum()
    assert math.pi * 0.15 ** 2 < area < math.pi * 0.25 ** 2


def test_one_sided_wall_is_visible_only_from_its_front():
    vertices, faces = _grid_plane(1.0, 0.25)
    wall = vertices[:, [1, 2, 0]]  # the plane x = 0 facing +X (an even permutation keeps the winding)
    scene = checked_scene("wall", wall, faces)
    point = check_point(scene, (0.0, 0.3, 0.1))
    np.testing.assert_allclose(point.normal, (1.0, 0.0, 0.0))
    selection = select_views(scene, point, SMALL)
    front = selection.candidates[:, 0] > 0
    elevation = np.degrees(np.arcsin(selection.candidates[:, 1]))
    azimuth_to_normal = np.degrees(np.arccos(selection.candidates[:, 0] / np.cos(np.radians(elevation))))
    np.testing.assert_allclose(selection.candidate_ratios[front & (azimuth_to_normal < 75)], 1.0)
    np.testing.assert_allclose(selection.candidate_ratios[~front], 0.0)  # seen from behind: back-facing
    assert (selection.directions[:, 0] > 0).all()


def test_a_plate_above_the_floor_hides_the_patch_from_high_views():
    """A 3 x 3 m plate at 0.5 m over the point: a line of sight at elevation e crosses y = 0.5 at
    horizontal distance 0.5 / tan(e), inside the plate (1.5 m) when e > atan(1/3) = 18.4 degrees."""
    floor_v, floor_f = _grid_plane(3.0, 0.5)
    plate_v, plate_f = _grid_plane(1.5, 0.5, y=0.5)
    plate_f = plate_f[:, ::-1]  # facing down
    scene = checked_scene("covered", np.concatenate([floor_v, plate_v]), np.concatenate([floor_f, plate_f + len(floor_v)]))
    selection = select_views(scene, (0.0, 0.0, 0.0), SMALL)
    elevation = np.degrees(np.arcsin(selection.candidates[:, 1]))
    # The patch spans 0.15 m, so allow a margin of a few degrees around the critical elevation.
    np.testing.assert_allclose(selection.candidate_ratios[(elevation > 11) & (elevation < 15)], 1.0)
    np.testing.assert_allclose(selection.candidate_ratios[elevation > 22], 0.0)
    assert (np.degrees(np.arcsin(selection.directions[:, 1])) < 22).all()


def test_ranking_is_by_ratio_with_a_strict_threshold_and_ties_spread():
    angles = np.radians([0, 90, 180, 270, 45])
    directions = np.column_stack([np.sin(angles), np.zeros(5), np.cos(angles)])
    ratios = np.array([0.9, 0.9, 0.9, 0.9, 0.4])
    assert rank_views(ratios, directions, 0.4, 16).tolist() == [0, 2, 1, 3]  # 0.4 does not pass
    assert rank_views(ratios, directions, 0.4, 2).tolist() == [0, 2]
    assert rank_views(np.array([0.5, 0.7, 0.6, 0.95, 0.41]), directions, 0.4, 3).tolist() == [3, 1, 2]


@pytest.mark.slow
def test_no_passing_view_is_an_input_error_with_a_nearby_point():
    """The point sits under a closed hood (a box without a bottom): no camera sees it. Outside the hood
    the hood's top and the floor around it are open, so a point there is suggested."""
    floor_v, floor_f = _grid_plane(1.0, 0.25)
    hood = trimesh.creation.box(bounds=((-0.3, 0.0, -0.3), (0.3, 0.4, 0.3)))
    keep = hood.face_normals[:, 1] > -0.5  # drop the bottom
    vertices = np.concatenate([floor_v, hood.vertices])
    faces = np.concatenate([floor_f, hood.faces[keep] + len(floor_v)])
    scene = checked_scene("hood", vertices, faces)
    with pytest.raises(InputError, match=r"no camera sees enough.*try the point") as error:
        select_views(scene, (0.0, 0.0, 0.0), SMALL)
    suggested = np.array([float(v) for v in str(error.value).rsplit("try the point ", 1)[1].split(", ")])
    under_hood = np.abs(suggested[[0, 2]]).max() < 0.3 and suggested[1] < 0.39
    assert not under_hood and np.linalg.norm(suggested) <= 1.0 + 0.25
    assert len(select_views(scene, suggested, SMALL).ratios) > 0


def test_renders_are_shaded_and_centred():
    scene = checked_scene("floor", *_grid_plane(1.0, 0.25))
    cameras = cameras_at((0.0, 0.0, 0.0), candidate_directions((0.0, 1.0, 0.0))[:2])
    images = views.render_views(scene, cameras, image_size=64)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    assert (images[:, 40, 32] < 255).all() and (images[:, 0, 32] == 255).all()  # floor below, sky above
