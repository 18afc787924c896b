"""Scene SDF: libigl winding-number distances against brute force (sphere, box, open box), GenZI's file
format and indexing, border behaviour, gradients, the up axis and the per-scene cache."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from engine.errors import InputError
from engine.genzi import sdf as sdf_module
from engine.genzi.scenes import Scene, builtin_scene, checked_scene
from engine.genzi.sdf import SceneSDF, compute_scene_sdf, load_genzi_sdf, save_genzi_sdf, scene_sdf, signed_distance

RNG = np.random.default_rng(7)


def _rectangle_distance(points, low, high):
    """Distance to an axis-aligned rectangle (one coordinate of low and high equal): clamp and measure."""
    return np.linalg.norm(points - np.clip(points, low, high), axis=1)


def _box_faces(low, high):
    (x0, y0, z0), (x1, y1, z1) = low, high
    return {"-x": ((x0, y0, z0), (x0, y1, z1)), "+x": ((x1, y0, z0), (x1, y1, z1)),
            "-y": ((x0, y0, z0), (x1, y0, z1)), "+y": ((x0, y1, z0), (x1, y1, z1)),
            "-z": ((x0, y0, z0), (x1, y1, z0)), "+z": ((x0, y0, z1), (x1, y1, z1))}


def _brute_force(points, rectangles, inside):
    distance = np.min([_rectangle_distance(points, np.array(lo), np.array(hi)) for lo, hi in rectangles], axis=0)
    return np.where(inside, -distance, distance)


def test_sphere_matches_the_analytic_distance():
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    points = RNG.uniform(-1, 1, (400, 3))
    expected = np.linalg.norm(points, axis=1) - 0.5
    got = signed_distance(mesh.vertices, mesh.faces, points)
    # The icosphere's chord error at subdivision 5 is below 0.3 mm.
    np.testing.assert_allclose(got, expected, atol=3e-4)
    assert np.all(np.sign(got[np.abs(expected) > 1e-3]) == np.sign(expected[np.abs(expected) > 1e-3]))


def test_box_matches_brute_force_over_its_faces():
    low, high = np.array([-0.3, 0.0, -0.2]), np.array([0.5, 0.4, 0.6])
    mesh = trimesh.creation.box(bounds=(low, high))
    points = RNG.uniform(-1, 1, (500, 3))
    inside = np.all((points > low) & (points < high), axis=1)
    expected = _brute_force(points, _box_faces(low, high).values(), inside)
    np.testing.assert_allclose(signed_distance(mesh.vertices, mesh.faces, points), expected, atol=1e-9)


def test_open_box_sign_is_inside_below_the_missing_lid():
    """A scan-like open mesh: a box without its top. Points inside the cup are negative, outside positive."""
    low, high = np.array([0.0, 0.0, 0.0]), np.array([1.0, 0.6, 1.0])
    box = trimesh.creation.box(bounds=(low, high))
    keep = box.face_normals[:, 1] < 0.5  # drop the two +Y triangles
    open_box = trimesh.Trimesh(box.vertices, box.faces[keep], process=False)
    assert not open_box.is_watertight
    faces = {key: value for key, value in _box_faces(low, high).items() if key != "+y"}
    inside_points = RNG.uniform((0.05, 0.02, 0.05), (0.95, 0.45, 0.95), (200, 3))
    outside_points = np.concatenate([RNG.uniform((-1, -1, -1), (2, -0.05, 2), (100, 3)),
                                     RNG.uniform((1.05, 0, 0), (2, 0.6, 1), (100, 3))])
    points = np.concatenate([inside_points, outside_points])
    inside = np.arange(len(points)) < len(inside_points)
    expected = _brute_force(points, faces.values(), inside)
    got = signed_distance(open_box.vertices, open_box.faces, points)
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert (got[inside] < 0).all() and (got[~inside] > 0).all()


def _sdf_of(values: np.ndarray, low, high) -> SceneSDF:
    return SceneSDF(torch.as_tensor(values, dtype=torch.float32), torch.tensor(low, dtype=torch.float64),
                    torch.tensor(high, dtype=torch.float64), torch.eye(3, dtype=torch.float64))


def test_grid_indexing_nodes_and_border_follow_genzis_format(tmp_path):
    """grid[ix][iy][iz]; nodes at both ends; outside points take the border value; trilinear inside."""
    dim, low, high = 5, (-1.0, 0.0, 2.0), (1.0, 4.0, 3.0)
    axes = [np.linspace(low[a], high[a], dim) for a in range(3)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    values = (x + 10 * y + 100 * z).astype(np.float32)  # linear, so trilinear sampling is exact
    save_genzi_sdf(_sdf_of(values, low, high), tmp_path / "room.json")
    header = json.loads((tmp_path / "room.json").read_text())
    assert header == {"dim": 5, "min": list(low), "max": list(high)}
    assert np.load(tmp_path / "room_sdf.npy")[4, 0, 0] == pytest.approx(1.0 + 0 + 200.0)
    sdf = load_genzi_sdf(tmp_path / "room.json")
    nodes = torch.tensor([[low[0], low[1], low[2]], [high[0], high[1], high[2]], [0.5, 1.0, 2.25]])
    np.testing.assert_allclose(sdf(nodes).numpy(), [-1 + 0 + 200, 1 + 40 + 300, 0.5 + 10 + 225], rtol=1e-6)
    between = torch.tensor([[0.3, 2.7, 2.9]])
    assert float(sdf(between)) == pytest.approx(0.3 + 27 + 290, rel=1e-6)
    outside = torch.tensor([[5.0, 2.0, 2.5], [-5.0, -3.0, 10.0]])
    np.testing.assert_allclose(sdf(outside).numpy(), [1 + 20 + 250, -1 + 0 + 300], rtol=1e-6)


def test_sampling_is_differentiable_and_keeps_batch_shape():
    sdf = compute_scene_sdf(checked_scene("box", *_unit_box()), dim=24, padding=0.3)
    points = torch.tensor([[[0.1, 0.2, 0.3], [0.9, 0.5, 0.5]]], dtype=torch.float32, requires_grad=True)
    values = sdf(points)
    assert values.shape == (1, 2)
    values.sum().backward()
    # Near the +X face from inside, the distance grows (towards zero) along +X.
    assert points.grad[0, 1, 0] > 0.5


def _unit_box():
    box = trimesh.creation.box(bounds=((0, 0, 0), (1, 1, 1)))
    return np.asarray(box.vertices), np.asarray(box.faces)


def test_computed_grid_matches_brute_force_at_nodes_and_between():
    low, high = np.array([0.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0])
    scene = checked_scene("box", *_unit_box())
    sdf = compute_scene_sdf(scene, dim=21, padding=0.5)
    nodes = sdf.node_positions().reshape(-1, 3).numpy()
    inside = np.all((nodes > low) & (nodes < high), axis=1)
    expected = _brute_force(nodes, _box_faces(low, high).values(), inside)
    np.testing.assert_allclose(sdf.grid.numpy().reshape(-1), expected, atol=1e-6)
    points = RNG.uniform(-0.3, 1.3, (300, 3))
    inside = np.all((points > low) & (points < high), axis=1)
    truth = _brute_force(points, _box_faces(low, high).values(), inside)
    error = np.abs(sdf(torch.from_numpy(points)).numpy() - truth)
    assert error.max() < 0.05  # the grid spacing; trilinear error of a 1-Lipschitz field stays below it


def test_z_up_genzi_grid_is_sampled_in_its_own_frame(tmp_path):
    """A GenZI grid of a Z-up scene whose value is the file's z (height): our y must read it."""
    dim, low, high = 9, (-1.0, -1.0, 0.0), (1.0, 1.0, 2.0)
    axes = [np.linspace(low[a], high[a], dim) for a in range(3)]
    _, _, z = np.meshgrid(*axes, indexing="ij")
    save_genzi_sdf(_sdf_of(z.astype(np.float32), low, high), tmp_path / "zup.json")
    sdf = load_genzi_sdf(tmp_path / "zup.json", up_axis="z")
    ours = torch.tensor([[0.2, 1.5, -0.3], [0.0, 0.25, 0.5]], dtype=torch.float64)
    np.testing.assert_allclose(sdf(ours).numpy(), [1.5, 0.25], atol=1e-6)


def test_cache_is_keyed_by_scene_and_reused(tmp_path, monkeypatch):
    scene = checked_scene("box", *_unit_box())
    first = scene_sdf(scene, dim=12, cache=tmp_path)
    files = sorted(path.name for path in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith("_sdf.npy")
    assert files[0].startswith(scene.content_hash[:32])
    monkeypatch.setattr(sdf_module, "compute_scene_sdf", lambda *args: pytest.fail("the cache was not used"))
    again = scene_sdf(scene, dim=12, cache=tmp_path)
    assert torch.equal(first.grid, again.grid)
    other = Scene("moved", scene.vertices + 1.0, scene.faces)
    with pytest.raises(pytest.fail.Exception):
        scene_sdf(other, dim=12, cache=tmp_path)


def test_builtin_sofa_sign(tmp_path):
    sdf = scene_sdf(builtin_scene("living_room"), dim=48, cache=tmp_path)
    values = sdf(torch.tensor([[0.0, 0.3, -1.5], [0.0, 0.6, -1.2], [0.0, -0.05, 2.0], [0.0, 0.5, 2.0]]))
    assert values[0] < 0 and values[1] > 0 and values[2] < 0 and values[3] > 0.3


def test_bad_grid_files_and_sizes_are_refused(tmp_path):
    with pytest.raises(InputError, match="integer in"):
        compute_scene_sdf(checked_scene("box", *_unit_box()), dim=1)
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(InputError, match="not a GenZI SDF header"):
        load_genzi_sdf(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"dim": 4, "min": [0, 0, 0], "max": [1, 1, 1]}))
    with pytest.raises(InputError, match="no grid beside it"):
        load_genzi_sdf(tmp_path / "b.json")
    np.save(tmp_path / "b_sdf.npy", np.zeros(27, np.float32))
    with pytest.raises(InputError, match=r"4\^3 finite float values"):
        load_genzi_sdf(tmp_path / "b.json")
    (tmp_path / "c.json").write_text(json.dumps({"dim": 4, "min": [0, 0, 0], "max": [1, 0, 1]}))
    with pytest.raises(InputError, match="must exceed"):
        load_genzi_sdf(tmp_path / "c.json")
