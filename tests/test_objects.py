"""Built-in procedural objects (closed, outward, realistic sizes) and hostile-input loading of user object files."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from engine import objects
from engine.contact.vocabulary import OBJECT_LABELS, resolve_object_label
from engine.errors import InputError
from engine.objects import BUILTIN_OBJECTS, ObjectGeometry, builtin_object, builtin_object_names, load_object_file
from studio.context import mesh_json


def object_to_json(obj: ObjectGeometry) -> dict:
    return mesh_json(obj.topology, obj.vertices, obj.faces)

NAMES = builtin_object_names()
# Bounding-box size (x, y, z) in metres of each built-in, and a plausible range of its enclosed volume (m^3).
EXPECTED = {
    "chair": ((0.44, 0.90, 0.42), (0.010, 0.020)),
    "table": ((1.20, 0.75, 0.75), (0.030, 0.060)),
    "bed": ((2.06, 0.95, 1.44), (1.2, 1.8)),
    "mug": ((0.128, 0.097, 0.08), (100e-6, 250e-6)),  # ceramic of a mug, its cavity excluded
    "bottle": ((0.07, 0.25, 0.07), (0.6e-3, 0.8e-3)),
    "bowl": ((0.16, 0.067, 0.16), (0.2e-3, 0.4e-3)),
    "knife": ((0.295, 0.025, 0.016), (30e-6, 70e-6)),
    "sofa": ((2.0, 0.85, 0.9), (0.8, 1.0)),  # parts overlap: the sum of part volumes, not the enclosed one
    "bicycle": ((1.74, 1.03, 0.56), (0.008, 0.014)),
    "skateboard": ((0.8, 0.095, 0.22), (3e-3, 5e-3)),
    "backpack": ((0.3, 0.45, 0.311), (0.022, 0.032)),
}


def doubled_areas(vertices, faces) -> np.ndarray:
    corners = np.asarray(vertices, dtype=np.float64)[faces]
    return np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)


def directed_edges(faces) -> np.ndarray:
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def component_volumes(vertices, faces) -> list[float]:
    """Signed volume of each connected component (divergence theorem: sum of v0 . (v1 x v2) / 6)."""
    edges = directed_edges(faces)
    count, labels = connected_components(coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])),
                                                    shape=(len(vertices),) * 2), directed=False)
    corners = np.asarray(vertices, dtype=np.float64)[faces]
    signed = np.einsum("ij,ij->i", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])) / 6
    face_label = labels[faces[:, 0]]
    return [float(signed[face_label == label].sum()) for label in range(count)]


def write(obj: ObjectGeometry, path, extension: str) -> None:
    if extension == ".npz":
        np.savez(path, points=obj.vertices, faces=obj.faces)
    else:
        trimesh.Trimesh(obj.vertices, obj.faces, process=False).export(path)


# --- built-ins ---------------------------------------------------------------------------------------


def test_registry_has_at_least_five_objects_with_known_labels():
    assert len(NAMES) >= 5 and set(NAMES) == set(BUILTIN_OBJECTS) == set(EXPECTED)
    for name in NAMES:
        obj = builtin_object(name)
        assert obj.name == name and obj.class_name in OBJECT_LABELS
        assert resolve_object_label(obj.class_name) == obj.class_name


@pytest.mark.parametrize("name", NAMES)
def test_builtin_is_a_valid_frozen_mesh(name):
    obj = builtin_object(name)
    assert obj.is_mesh and obj.vertices.dtype == np.float32 and obj.faces.dtype == np.int64
    assert obj.vertices.shape[1] == 3 and obj.faces.shape[1] == 3
    assert 300 <= len(obj.vertices) <= 4000, len(obj.vertices)
    assert np.isfinite(obj.vertices).all()
    assert obj.faces.min() == 0 and obj.faces.max() == len(obj.vertices) - 1  # in range, every vertex used
    assert doubled_areas(obj.vertices, obj.faces).min() > 1e-9  # no degenerate faces (>= 0.0005 mm^2)
    with pytest.raises(ValueError):
        obj.vertices[0, 0] = 1.0  # shared through the cache: read-only


@pytest.mark.parametrize("name", NAMES)
def test_builtin_is_closed_with_consistent_outward_winding(name):
    obj = builtin_object(name)
    edges = directed_edges(obj.faces)
    _, undirected = np.unique(np.sort(edges, axis=1), axis=0, return_counts=True)
    assert (undirected == 2).all()  # watertight: every edge borders exactly two faces
    _, directed = np.unique(edges, axis=0, return_counts=True)
    assert (directed == 1).all()  # consistent: the two faces traverse their edge in opposite directions
    volumes = component_volumes(obj.vertices, obj.faces)
    assert min(volumes) > 0, volumes  # counter-clockwise seen from outside, part by part
    low, high = EXPECTED[name][1]
    assert low < sum(volumes) < high


@pytest.mark.parametrize("name", NAMES)
def test_builtin_has_a_realistic_size_and_is_centred(name):
    vertices = builtin_object(name).vertices
    size = vertices.max(0) - vertices.min(0)
    np.testing.assert_allclose(size, EXPECTED[name][0], rtol=0.03)
    np.testing.assert_allclose((vertices.max(0) + vertices.min(0)) / 2, 0.0, atol=1e-6)


def test_builtin_lookup_is_cached_and_unknown_names_list_the_known_ones():
    assert builtin_object("mug") is builtin_object("mug")
    assert builtin_object("chair").class_name == "chair" and builtin_object("mug").class_name == "mug"
    with pytest.raises(InputError, match="unknown built-in object 'teapot'.*chair.*bottle"):
        builtin_object("teapot")


def test_lathe_objects_face_away_from_their_axis():
    """Outer wall faces of the bottle point away from the Y axis (winding, not just volume sign)."""
    obj = builtin_object("bottle")
    corners = obj.vertices.astype(np.float64)[obj.faces]
    centres = corners.mean(1)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    radial = centres * (1, 0, 1)
    wall = np.linalg.norm(radial, axis=1) > 0.034  # the body's outer wall (radius 3.5 cm)
    assert wall.sum() > 100
    assert ((normals[wall] * radial[wall]).sum(1) > 0).all()


# --- round trips -------------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", [".obj", ".ply", ".off", ".glb", ".npz"])
@pytest.mark.parametrize("name", NAMES)
def test_mesh_round_trip(tmp_path, name, extension):
    original = builtin_object(name)
    path = tmp_path / f"{name}{extension}"
    write(original, path, extension)
    loaded = load_object_file(path, path.name, class_name=original.class_name)
    assert loaded.is_mesh and loaded.name == path.name and loaded.class_name == original.class_name
    np.testing.assert_allclose(loaded.vertices, original.vertices, atol=1e-5)
    assert loaded.faces.shape == original.faces.shape
    np.testing.assert_array_equal(loaded.faces, original.faces)


def test_stl_round_trip_welds_the_triangle_soup(tmp_path):
    original = builtin_object("bowl")
    path = tmp_path / "bowl.stl"
    trimesh.Trimesh(original.vertices, original.faces, process=False).export(path)
    loaded = load_object_file(path.read_bytes(), "bowl.stl", class_name="bowl")
    assert len(loaded.vertices) == len(original.vertices) and len(loaded.faces) == len(original.faces)
    np.testing.assert_allclose(np.sort(loaded.vertices, axis=0), np.sort(original.vertices, axis=0), atol=1e-6)


def test_glb_scene_geometry_is_concatenated():
    mug, bowl = builtin_object("mug"), builtin_object("bowl")
    scene = trimesh.Scene([trimesh.Trimesh(mug.vertices, mug.faces, process=False),
                           trimesh.Trimesh(bowl.vertices + np.float32([0.3, 0, 0]), bowl.faces, process=False)])
    loaded = load_object_file(scene.export(file_type="glb"), "set.glb", class_name="bowl")
    assert len(loaded.vertices) == len(mug.vertices) + len(bowl.vertices)
    assert len(loaded.faces) == len(mug.faces) + len(bowl.faces)
    assert loaded.vertices[:, 0].max() == pytest.approx(bowl.vertices[:, 0].max() + 0.3, abs=1e-5)


def test_bytes_and_paths_load_the_same(tmp_path):
    path = tmp_path / "knife.obj"
    write(builtin_object("knife"), path, ".obj")
    from_path = load_object_file(str(path), "knife.obj", class_name="knives")
    from_bytes = load_object_file(path.read_bytes(), "knife.obj", class_name="knife")
    np.testing.assert_array_equal(from_path.vertices, from_bytes.vertices)
    assert from_path.class_name == "knife"


# --- point clouds ------------------------------------------------------------------------------------

POINTS = np.random.default_rng(0).uniform(-0.1, 0.1, size=(500, 3))


def test_npy_point_cloud():
    buffer = io.BytesIO()
    np.save(buffer, POINTS)
    loaded = load_object_file(buffer.getvalue(), "cloud.npy", class_name="bottle")
    assert loaded.faces is None and not loaded.is_mesh and loaded.topology == "points-500"
    np.testing.assert_allclose(loaded.vertices, POINTS, atol=1e-7)


def test_npz_points_without_faces(tmp_path):
    np.savez_compressed(tmp_path / "cloud.npz", points=POINTS.astype(np.float32), labels=np.zeros(500))
    loaded = load_object_file(tmp_path / "cloud.npz", "cloud.npz", class_name="bowl")
    assert loaded.faces is None
    np.testing.assert_allclose(loaded.vertices, POINTS, atol=1e-7)


def test_ply_point_cloud():
    data = trimesh.PointCloud(POINTS).export(file_type="ply")
    loaded = load_object_file(data, "cloud.ply", class_name="chair")
    assert loaded.faces is None
    np.testing.assert_allclose(loaded.vertices, POINTS, atol=1e-6)


def test_piad_txt_with_20_columns():
    affordances = np.random.default_rng(1).uniform(0, 1, size=(len(POINTS), 17))
    text = "\n".join(" ".join(f"{value:.6f}" for value in row) for row in np.hstack([POINTS, affordances]))
    loaded = load_object_file(text.encode(), "Mug_12.txt", class_name="mug")
    assert loaded.faces is None and len(loaded.vertices) == 500
    np.testing.assert_allclose(loaded.vertices, POINTS, atol=1e-6)


@pytest.mark.parametrize("prefix", ["", "Mug ", "7 "])
def test_txt_rows_of_xyz_after_an_optional_class_or_id_column(prefix):
    text = "# x y z\n" + "\n".join(prefix + " ".join(f"{value:.6f}" for value in row) for row in POINTS[:50])
    loaded = load_object_file(text.encode(), "points.txt", class_name="mug")
    np.testing.assert_allclose(loaded.vertices, POINTS[:50], atol=1e-6)


# --- hostile or broken input -------------------------------------------------------------------------


def npy_bytes(array, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def test_nan_and_inf_vertices_are_refused():
    bad = POINTS.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="NaN or inf in 1 vertices; every coordinate must be finite"):
        load_object_file(npy_bytes(bad), "cloud.npy", class_name="mug")
    obj = b"v 0 0 0\nv 1 0 inf\nv 0 1 0\nf 1 2 3\n"
    with pytest.raises(InputError, match="NaN or inf"):
        load_object_file(obj, "tri.obj", class_name="mug")


def test_out_of_range_faces_are_refused():
    mug = builtin_object("mug")
    faces = mug.faces.copy()
    faces[10, 2] = len(mug.vertices)
    buffer = io.BytesIO()
    np.savez(buffer, points=mug.vertices, faces=faces)
    with pytest.raises(InputError, match=rf"faces refer to vertex ids in \[0, {len(mug.vertices)}\].*valid ids are 0"):
        load_object_file(buffer.getvalue(), "mug.npz", class_name="mug")
    with pytest.raises(InputError, match="could not read the mesh: .* not a well-formed .off file.*outside the range"):
        load_object_file(b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "tri.off", class_name="mug")
    with pytest.raises(InputError, match="could not read the mesh: .* not a well-formed .obj file.*out of bounds"):
        load_object_file(b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n", "tri.obj", class_name="mug")


@pytest.mark.parametrize("extension", objects.MESH_EXTENSIONS + objects.POINT_EXTENSIONS)
def test_empty_files_are_refused(tmp_path, extension):
    with pytest.raises(InputError, match="is empty; expected one of meshes"):
        load_object_file(b"", f"nothing{extension}", class_name="mug")
    (tmp_path / f"nothing{extension}").write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        load_object_file(tmp_path / f"nothing{extension}", f"nothing{extension}", class_name="mug")


def test_files_with_no_geometry_are_refused():
    with pytest.raises(InputError, match="vertices is empty"):
        load_object_file(b"# an obj file with only a comment\n", "blank.obj", class_name="mug")
    with pytest.raises(InputError, match="has no rows"):
        load_object_file(b"# header only\n\n", "blank.txt", class_name="mug")


@pytest.mark.parametrize("name, message", [
    ("junk.obj", "holds binary data, but .obj files are text"),
    ("junk.off", "holds binary data, but .off files are text"),
    ("junk.glb", "not a well-formed .glb file"),
    ("junk.ply", "not a well-formed .ply file"),
    ("junk.txt", "is not UTF-8 text"),
    ("junk.npy", "is not a readable .npy array"),
    ("junk.npz", "is not a readable .npz archive"),
])
def test_undecodable_bytes_are_refused(name, message):
    junk = bytes(range(256)) * 8
    with pytest.raises(InputError, match=message):
        load_object_file(junk, name, class_name="mug")


def test_unknown_extension_is_refused_and_the_accepted_ones_are_listed():
    with pytest.raises(InputError, match=r"unknown object file type '\.fbx'.*\.obj, \.ply, \.off, \.stl, \.glb.*\.npy"):
        load_object_file(b"Kaydara FBX Binary", "model.fbx", class_name="mug")
    with pytest.raises(InputError, match=r"unknown object file type '\(none\)'"):
        load_object_file(b"v 0 0 0", "model", class_name="mug")


calls: list[str] = []


def _record_unpickling():
    calls.append("unpickled")
    return "payload"


class _Payload:
    def __reduce__(self):
        return (_record_unpickling, ())


def test_pickled_arrays_are_refused_without_being_unpickled():
    array = np.empty(3, dtype=object)
    array[:] = [_Payload(), _Payload(), _Payload()]
    with pytest.raises(InputError, match="holds object values.*never loaded"):
        load_object_file(npy_bytes(array, allow_pickle=True), "evil.npy", class_name="mug")
    buffer = io.BytesIO()
    np.savez(buffer, points=array)
    with pytest.raises(InputError, match="holds object values"):
        load_object_file(buffer.getvalue(), "evil.npz", class_name="mug")
    assert calls == []


def test_too_many_points_or_faces_are_refused(monkeypatch):
    too_many = np.zeros((objects.MAX_OBJECT_POINTS + 1, 3))
    too_many[:, 0] = np.arange(len(too_many))
    with pytest.raises(InputError, match=r"shape \(100001, 3\); at most 100000 rows of 3 values"):
        load_object_file(npy_bytes(too_many), "big.npy", class_name="mug")  # refused from the header alone
    rows = "\n".join(f"{x:.0f} 0 0" for x in too_many[:, 0]).encode()
    with pytest.raises(InputError, match="100001 points; at most 100000 are accepted"):
        load_object_file(rows, "big.txt", class_name="mug")
    chair = trimesh.Trimesh(builtin_object("chair").vertices, builtin_object("chair").faces, process=False)
    monkeypatch.setattr(objects, "MAX_OBJECT_FACES", 1000)
    with pytest.raises(InputError, match="declares 5676 face elements"):  # OBJ face lines counted before parsing
        load_object_file(chair.export(file_type="obj").encode(), "chair.obj", class_name="chair")
    with pytest.raises(InputError, match="declares 5676 face elements"):  # refused from the header alone
        load_object_file(chair.export(file_type="ply"), "chair.ply", class_name="chair")


def test_a_header_declaring_a_billion_vertices_is_refused_before_parsing():
    header = (b"ply\nformat binary_little_endian 1.0\nelement vertex 1000000000\nproperty float x\n"
              b"property float y\nproperty float z\nend_header\n")
    with pytest.raises(InputError, match="declares 1000000000 vertex elements"):
        load_object_file(header + bytes(120), "bomb.ply", class_name="mug")


def test_oversized_files_are_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(objects, "MAX_OBJECT_BYTES", 1000)
    data = trimesh.Trimesh(builtin_object("mug").vertices, builtin_object("mug").faces).export(file_type="ply")
    with pytest.raises(InputError, match="at most 1000 bytes are accepted"):
        load_object_file(data, "mug.ply", class_name="mug")
    (tmp_path / "mug.ply").write_bytes(data)
    with pytest.raises(InputError, match="at most 1000 bytes are accepted"):
        load_object_file(tmp_path / "mug.ply", "mug.ply", class_name="mug")


def test_unknown_class_labels_are_refused():
    with pytest.raises(InputError, match="unknown object 'spaceship'"):
        load_object_file(npy_bytes(POINTS), "cloud.npy", class_name="spaceship")
    with pytest.raises(InputError, match="Did you mean 'mug'"):
        load_object_file(npy_bytes(POINTS), "cloud.npy", class_name="mugg")
    assert load_object_file(npy_bytes(POINTS), "cloud.npy", class_name="Coffee Mugs").class_name == "mug"


def test_degenerate_faces_are_dropped_but_an_all_degenerate_mesh_is_refused():
    mug = builtin_object("mug")
    faces = np.concatenate([mug.faces, [[0, 0, 1], [5, 6, 5]]])
    buffer = io.BytesIO()
    np.savez(buffer, points=mug.vertices, faces=faces)
    loaded = load_object_file(buffer.getvalue(), "mug.npz", class_name="mug")
    np.testing.assert_array_equal(loaded.faces, mug.faces)
    collinear = b"v 0 0 0\nv 1 0 0\nv 2 0 0\nv 3 0 0\nf 1 2 3\nf 2 3 4\n"
    with pytest.raises(InputError, match="all 2 faces have zero area"):
        load_object_file(collinear, "line.obj", class_name="mug")


@pytest.mark.parametrize("data, name, message", [
    (npy_bytes(np.zeros((10, 3))), "dot.npy", "all its 10 points coincide"),
    (npy_bytes(np.zeros((10, 2))), "flat.npy", r"must have shape \(V, 3\)"),
    (npy_bytes(np.eye(3) * 1e300), "huge.npy", "too large for float32"),
    (npy_bytes(np.array(["a", "b"])), "text.npy", "holds <U1 values"),
    (b"1 2 3\n4 5\n", "ragged.txt", "rows have different numbers of columns"),
    (b"1 2 x\n4 5 6\n", "words.txt", "not a number"),
    (b"0.5 0.25\n1 2\n", "pairs.txt", "rows have 2 numeric columns; at least x y z"),
])
def test_malformed_arrays_are_refused(data, name, message):
    with pytest.raises(InputError, match=message):
        load_object_file(data, name, class_name="mug")


def test_npz_without_points_names_the_expected_keys():
    buffer = io.BytesIO()
    np.savez(buffer, xyz=POINTS)
    with pytest.raises(InputError, match=r"no 'points' array \(found \['xyz'\]\).*'points' \(N, 3\)"):
        load_object_file(buffer.getvalue(), "cloud.npz", class_name="mug")


def test_a_file_name_is_reduced_to_its_base_name_and_bad_sources_are_refused():
    loaded = load_object_file(npy_bytes(POINTS), "../../etc/cloud.npy", class_name="mug")
    assert loaded.name == "cloud.npy"
    with pytest.raises(InputError, match="path or bytes"):
        load_object_file(12345, "cloud.npy", class_name="mug")
    with pytest.raises(InputError, match="needs a file name"):
        load_object_file(npy_bytes(POINTS), "", class_name="mug")


def _seed_file(extension: str) -> bytes:
    bottle = builtin_object("bottle")
    buffer = io.BytesIO()
    if extension == ".npz":
        np.savez_compressed(buffer, points=bottle.vertices, faces=bottle.faces)
        return buffer.getvalue()
    if extension == ".npy":
        np.save(buffer, bottle.vertices)
        return buffer.getvalue()
    if extension == ".txt":
        return "\n".join(" ".join(f"{v:.5f}" for v in row) for row in bottle.vertices[:300]).encode()
    data = trimesh.Trimesh(bottle.vertices, bottle.faces, process=False).export(file_type=extension[1:])
    return data.encode() if isinstance(data, str) else data


@pytest.mark.parametrize("extension", objects.MESH_EXTENSIONS + objects.POINT_EXTENSIONS)
def test_corrupted_files_only_ever_raise_input_error(extension):
    """Seeded corruption (flipped bytes, truncation, overwritten headers) of a valid file: it loads or it is
    refused with InputError; nothing else escapes (zlib, tokenizer and parser errors included)."""
    rng = np.random.default_rng(0)
    data = _seed_file(extension)
    refused = 0
    for trial in range(60):
        corrupt = bytearray(data)
        if trial % 3 == 0:
            for index in rng.integers(len(corrupt), size=rng.integers(1, 20)):
                corrupt[index] = rng.integers(256)
        elif trial % 3 == 1:
            corrupt = corrupt[: rng.integers(len(corrupt))]
        else:
            start = rng.integers(min(len(corrupt), 400))
            corrupt[start:start + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
        try:
            loaded = load_object_file(bytes(corrupt), f"corrupt{extension}", class_name="bottle")
        except InputError:
            refused += 1
        else:
            assert np.isfinite(loaded.vertices).all() and len(loaded.vertices) <= objects.MAX_OBJECT_POINTS
    assert refused > 0


# --- browser payload ---------------------------------------------------------------------------------


def test_painter_json_for_a_mesh_and_a_point_cloud():
    mug = builtin_object("mug")
    payload = object_to_json(mug)
    assert set(payload) == {"topology", "vertices", "faces", "part_labels", "part_names"}
    assert payload["topology"] == f"points-{len(mug.vertices)}"
    assert len(payload["vertices"]) == 3 * len(mug.vertices) and len(payload["faces"]) == 3 * len(mug.faces)
    assert payload["faces"][:3] == mug.faces[0].tolist() and all(isinstance(i, int) for i in payload["faces"][:9])
    np.testing.assert_allclose(payload["vertices"], mug.vertices.ravel(), atol=5e-6)
    assert all(round(value, 5) == value for value in payload["vertices"])
    assert payload["part_labels"] == [] and payload["part_names"] == []
    json.dumps(payload)
    cloud = object_to_json(load_object_file(npy_bytes(POINTS), "cloud.npy", class_name="bottle"))
    assert cloud["faces"] == [] and cloud["topology"] == "points-500"
