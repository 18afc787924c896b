"""GenZI scenes: built-in rooms, loading user meshes in every accepted format, the up axis, bad input."""
from __future__ import annotations

import io

import numpy as np
import pytest
import trimesh

from engine.errors import InputError
from engine.genzi import scenes
from engine.genzi.scenes import BUILTIN_POINTS, builtin_scene, check_point, load_scene_file


@pytest.mark.parametrize("name", scenes.builtin_scene_names())
def test_builtin_scene_is_a_room_with_a_floor_and_its_point_on_a_surface(name):
    scene = builtin_scene(name)
    assert scene.up_axis == "y" and scene.faces.shape[1] == 3
    low, high = scene.vertices.min(0), scene.vertices.max(0)
    np.testing.assert_allclose(low, (-3.0, -0.1, -3.0))
    assert high[0] == 3.0 and high[2] == 3.0 and 0.8 <= high[1] <= 1.2
    point = check_point(scene, BUILTIN_POINTS[name])
    assert point.distance < 1e-6
    np.testing.assert_allclose(point.normal, (0.0, 1.0, 0.0), atol=1e-9)  # a seat or a mattress, facing up
    assert not scene.vertices.flags.writeable


def test_builtin_furniture_heights():
    living = builtin_scene("living_room")
    # The sofa seat top (0.45 m) and the coffee table top (0.75 m) are both surfaces.
    assert check_point(living, (0.5, 0.45, -1.3)).distance < 1e-6
    assert check_point(living, (0.0, 0.75, -0.2)).distance < 1e-6
    stairs = builtin_scene("stair_room")
    for step in range(6):  # each tread of the stairs (rise 0.18, run 0.28 towards -Z from z = 0.5)
        assert check_point(stairs, (1.2, 0.18 * (step + 1), 0.5 - 0.28 * step - 0.14)).distance < 1e-6
    assert check_point(builtin_scene("bedroom"), (0.0, 0.5, 0.3)).distance < 1e-6


def test_unknown_builtin_names_the_choices():
    with pytest.raises(InputError, match="living_room, bedroom, stair_room"):
        builtin_scene("kitchen")


def _two_boxes_z_up() -> trimesh.Trimesh:
    """A Z-up file: a 2 x 2 m floor slab with its top at z = 0 and a 0.4 m cube standing on it."""
    floor = trimesh.creation.box(extents=(2.0, 2.0, 0.1), transform=trimesh.transformations.translation_matrix((0, 0, -0.05)))
    cube = trimesh.creation.box(extents=(0.4, 0.4, 0.4), transform=trimesh.transformations.translation_matrix((0.5, 0.3, 0.2)))
    return trimesh.util.concatenate([floor, cube])


@pytest.mark.parametrize("extension", [".ply", ".obj", ".glb", ".off", ".stl"])
def test_every_format_loads_and_z_up_becomes_y_up(extension):
    mesh = _two_boxes_z_up()
    data = mesh.export(file_type=extension[1:])
    data = data.encode() if isinstance(data, str) else data
    scene = load_scene_file(data, "room" + extension, up_axis="z")
    assert scene.up_axis == "z" and len(scene.faces) == 24
    np.testing.assert_allclose(scene.vertices.min(0), (-1.0, -0.1, -1.0), atol=1e-6)
    np.testing.assert_allclose(scene.vertices.max(0), (1.0, 0.4, 1.0), atol=1e-6)
    # The cube's top (z = 0.4 in the file) is at y = 0.4 here; file y = 0.3 becomes z = -0.3.
    assert check_point(scene, (0.5, 0.4, -0.3)).distance < 1e-6
    np.testing.assert_allclose(scene.to_source_frame((0.5, 0.4, -0.3)), (0.5, 0.3, 0.4))
    rotation = scenes.Z_UP_TO_Y_UP
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3))
    assert np.linalg.det(rotation) == pytest.approx(1.0)  # a rotation: the faces keep their outward winding


def test_y_up_file_is_unchanged_and_open_scans_load(tmp_path):
    plane = trimesh.Trimesh(vertices=[(0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)], faces=[(0, 2, 1), (0, 3, 2)])
    path = tmp_path / "scan.ply"
    plane.export(path)
    scene = load_scene_file(path)
    np.testing.assert_allclose(scene.vertices, plane.vertices)
    assert scene.name == "scan.ply" and len(scene.faces) == 2


def test_content_hash_follows_geometry():
    a = scenes.checked_scene("a", [(0, 0, 0), (1, 0, 0), (0, 0, 1)], [(0, 2, 1)])
    b = scenes.checked_scene("b", [(0, 0, 0), (1, 0, 0), (0, 0, 1)], [(0, 2, 1)])
    c = scenes.checked_scene("c", [(0, 0, 0), (1, 0, 0), (0, 0, 2)], [(0, 2, 1)])
    assert a.content_hash == b.content_hash != c.content_hash


@pytest.mark.parametrize("vertices, faces, message", [
    ([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], "no faces"),
    ([(0, 0, 0), (1, 0, 0), (2, 0, 0)], [(0, 1, 2)], "zero area"),
    ([(0, 0, 0), (0.001, 0, 0), (0, 0.001, 0)], [(0, 1, 2)], "degenerate: its surface spans"),
    ([(0, 0, 0), (1, 0, np.nan), (0, 1, 0)], [(0, 1, 2)], "NaN or inf"),
    ([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [(0, 1, 5)], "vertex ids"),
])
def test_empty_or_degenerate_scene_is_refused(vertices, faces, message):
    with pytest.raises(InputError, match=message):
        scenes.checked_scene("bad", np.asarray(vertices, float), np.asarray(faces, np.int64).reshape(-1, 3))


def test_bad_scene_files_are_refused_without_paths(tmp_path):
    with pytest.raises(InputError, match="unknown scene file type '.txt'"):
        load_scene_file(b"1 2 3", "room.txt")
    with pytest.raises(InputError, match="is empty"):
        load_scene_file(b"", "room.ply")
    with pytest.raises(InputError, match="could not be read") as error:
        load_scene_file(b"\x00\x01garbage", "room.glb")
    assert str(tmp_path) not in str(error.value)
    with pytest.raises(InputError, match="no scene file was found") as missing:
        load_scene_file(tmp_path / "gone.ply")
    assert str(tmp_path) not in str(missing.value)
    cloud = trimesh.PointCloud(np.random.default_rng(0).random((10, 3))).export(file_type="ply")
    with pytest.raises(InputError, match="no faces"):
        load_scene_file(cloud, "cloud.ply")
    header = b"ply\nformat ascii 1.0\nelement vertex 99999999\nproperty float x\nend_header\n"
    with pytest.raises(InputError, match="declares 99999999 vertex"):
        load_scene_file(header, "huge.ply")
    with pytest.raises(InputError, match="up axis"):
        load_scene_file(io.BytesIO(b"").getvalue(), "room.ply", up_axis="x")


def test_point_far_from_surface_suggests_the_closest_point():
    scene = builtin_scene("living_room")
    with pytest.raises(InputError, match=r"1\.00 m from the scene's surface.*closest surface point is 0\.000, 0\.000, 1\.500"):
        check_point(scene, (0.0, 1.0, 1.5))
    assert check_point(scene, (0.0, 0.5, -1.35)).distance == pytest.approx(0.05)


@pytest.mark.parametrize("point", [(1.0, 2.0), "sofa", (0.0, float("nan"), 0.0), (1, 2, 3, 4)])
def test_malformed_point_is_refused(point):
    with pytest.raises(InputError, match="three"):
        check_point(builtin_scene("bedroom"), point)
