"""Scenes for GenZI: built-in procedural rooms, user scene meshes, the up axis, and point checks.

Frames
    Our world is Y up (DESIGN.md). GenZI's release and its data (PROX-S, Sketchfab) are Z up. A scene
    file is loaded with an ``up_axis`` ("y" or "z"); a Z-up scene is turned into our frame by the
    proper rotation ``(x, y, z) -> (x, z, -y)`` (``Z_UP_TO_Y_UP``), and ``Scene.to_source_frame``
    writes results back in the file's own frame.

Built-ins
    ``living_room`` (sofa and coffee table), ``bedroom`` (bed and nightstand) and ``stair_room``
    (two chairs and a flight of stairs). Every part is a closed box-like surface from
    ``engine.objects``, floors are 10 cm slabs with their top at y = 0, so the winding-number SDF
    is exact for them and the rooms work without downloads.

User files
    Anything trimesh reads (.ply .obj .glb .off .stl), scans that are not watertight included. The
    bytes are checked like object uploads (size, declared counts, finiteness, face ids), with the
    larger limits a room needs. Degenerate faces are dropped; a scene without a real triangle is an
    ``InputError``.
"""
from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Callable

import igl
import numpy as np
import trimesh

from engine import objects
from engine.errors import InputError
from engine.mesh import as_faces, as_vertices
from engine.paths import read_bounded

MAX_SCENE_BYTES = 200 * 1024 ** 2
MAX_SCENE_VERTICES = 2_000_000
MAX_SCENE_FACES = 4_000_000
SCENE_EXTENSIONS: tuple[str, ...] = (".ply", ".obj", ".glb", ".off", ".stl")
UP_AXES: tuple[str, ...] = ("y", "z")
POINT_TOLERANCE = 0.1  # metres: a point must lie within this of the surface
MIN_SCENE_EXTENT = 0.05  # metres: anything smaller is not a room
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # rows: new x, y, z


@dataclass(frozen=True, eq=False)
class Scene:
    """A scene mesh in our Y-up world.

    name: display name.  vertices: (V, 3) float64, read-only, metres.  faces: (F, 3) int64, read-only.
    up_axis: the source file's up axis ("y" or "z"); ``to_source_frame`` maps our points back to it.
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    up_axis: str = "y"

    def __post_init__(self):
        if self.up_axis not in UP_AXES:
            raise InputError(f"up axis must be one of {', '.join(UP_AXES)}, got {self.up_axis!r}")
        vertices = np.array(self.vertices, dtype=np.float64, order="C")
        faces = np.array(self.faces, dtype=np.int64, order="C")
        vertices.flags.writeable = False
        faces.flags.writeable = False
        object.__setattr__(self, "vertices", vertices)
        object.__setattr__(self, "faces", faces)

    @functools.cached_property
    def content_hash(self) -> str:
        """sha256 of the geometry (vertices and faces in our frame): the key of every per-scene cache."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.vertices).tobytes())
        digest.update(np.ascontiguousarray(self.faces).tobytes())
        return digest.hexdigest()

    @functools.cached_property
    def face_normals(self) -> np.ndarray:
        """(F, 3) unit normals of counter-clockwise faces."""
        corners = self.vertices[self.faces]
        normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)

    @functools.cached_property
    def face_areas(self) -> np.ndarray:
        corners = self.vertices[self.faces]
        return 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)

    def to_source_frame(self, points) -> np.ndarray:
        """(..., 3) points of our frame in the source file's frame."""
        points = np.asarray(points, dtype=np.float64)
        return points @ Z_UP_TO_Y_UP if self.up_axis == "z" else points.copy()


def from_source_frame(points, up_axis: str) -> np.ndarray:
    """(..., 3) points of a file with ``up_axis`` in our Y-up frame."""
    if up_axis not in UP_AXES:
        raise InputError(f"up axis must be one of {', '.join(UP_AXES)}, got {up_axis!r}")
    points = np.asarray(points, dtype=np.float64)
    return points @ Z_UP_TO_Y_UP.T if up_axis == "z" else points.copy()


def checked_scene(name: str, vertices, faces, up_axis: str = "y") -> Scene:
    """Validate a scene's geometry (in the source frame), drop degenerate faces, turn it Y up."""
    vertices = np.asarray(vertices)
    if vertices.ndim == 2 and len(vertices) > MAX_SCENE_VERTICES:
        raise InputError(f"the scene has {len(vertices)} vertices; at most {MAX_SCENE_VERTICES} are accepted")
    if faces is None or len(faces) == 0:
        raise InputError("the scene has no faces: GenZI needs a surface mesh (a point cloud cannot be rendered)")
    vertices = as_vertices(vertices, name="scene vertices").numpy().astype(np.float64)
    faces = as_faces(np.asarray(faces), len(vertices), name="scene faces").numpy()
    if len(faces) > MAX_SCENE_FACES:
        raise InputError(f"the scene has {len(faces)} faces; at most {MAX_SCENE_FACES} are accepted")
    extent = float(np.ptp(vertices[np.unique(faces)], axis=0).max())
    if extent < MIN_SCENE_EXTENT:
        raise InputError(f"the scene is degenerate: its surface spans {extent:.3g} m; a room is at least "
                         f"{MIN_SCENE_EXTENT} m across (give coordinates in metres)")
    kept = objects._drop_degenerate(vertices, faces)
    if len(kept) == 0:
        raise InputError(f"the scene is degenerate: all {len(faces)} faces have zero area")
    return Scene(name, from_source_frame(vertices, up_axis), kept, up_axis)


# --- built-in rooms ------------------------------------------------------------------------------


def _moved(part: tuple[np.ndarray, np.ndarray], offset) -> tuple[np.ndarray, np.ndarray]:
    vertices, faces = part
    return vertices + np.asarray(offset, dtype=np.float64), faces


def _on_floor(geometry: objects.ObjectGeometry, x: float, z: float) -> tuple[np.ndarray, np.ndarray]:
    """A built-in object (bounding box centred on the origin) standing on y = 0 at (x, z)."""
    vertices = geometry.vertices.astype(np.float64)
    return _moved((vertices, np.asarray(geometry.faces)), (x, -vertices[:, 1].min(), z))


def _floor(half: float) -> tuple[np.ndarray, np.ndarray]:
    return objects._box((-half, -0.1, -half), (half, 0.0, half), 0.5)


def build_sofa() -> tuple[np.ndarray, np.ndarray]:
    """A three-seat sofa facing +Z: 2.0 m wide, seat top at 0.45 m, back to 0.85 m, two arms."""
    step = 0.1
    base = objects._box((-0.9, 0.0, -0.45), (0.9, 0.45, 0.45), step)
    back = objects._box((-0.9, 0.0, -0.45), (0.9, 0.85, -0.25), step)
    arms = [objects._box((x, 0.0, -0.45), (x + 0.1, 0.62, 0.45), step) for x in (-1.0, 0.9)]
    return objects._combine(base, back, *arms)


def build_stairs(steps: int = 6, rise: float = 0.18, run: float = 0.28, width: float = 1.0):
    """A straight flight of ``steps`` solid steps rising towards -Z, the first riser at z = 0."""
    blocks = [objects._box((-width / 2, 0.0, -(k + 1) * run), (width / 2, (k + 1) * rise, -k * run), 0.14)
              for k in range(steps)]
    return objects._combine(*blocks)


def build_living_room() -> Scene:
    """A 6 x 6 m floor, a sofa against the back (seat centre at (0, 0.45, -1.5)) and a coffee table."""
    sofa = _moved(build_sofa(), (0.0, 0.0, -1.5))
    table = _on_floor(objects.builtin_object("table"), 0.0, -0.2)
    return Scene("living_room", *objects._combine(_floor(3.0), sofa, table))


def build_bedroom() -> Scene:
    """A 6 x 6 m floor, a double bed (mattress top at 0.5 m) along X and a nightstand."""
    bed = _on_floor(objects.builtin_object("bed"), 0.0, 0.0)
    nightstand = objects._box((-1.0, 0.0, -1.3), (-0.55, 0.55, -0.85), 0.1)
    return Scene("bedroom", *objects._combine(_floor(3.0), bed, nightstand))


def build_stair_room() -> Scene:
    """A 6 x 6 m floor, a flight of six stairs rising to -Z and two chairs facing each other."""
    stairs = _moved(build_stairs(), (1.2, 0.0, 0.5))
    chairs = [_on_floor(objects.builtin_object("chair"), -1.2, 0.6)]
    facing = objects.builtin_object("chair")
    turned = facing.vertices.astype(np.float64) * (-1.0, 1.0, -1.0)  # a half turn about Y keeps the winding
    chairs.append(_on_floor(objects.ObjectGeometry("chair", "chair", turned, facing.faces), -1.2, -0.6))
    return Scene("stair_room", *objects._combine(_floor(3.0), stairs, *chairs))


BUILTIN_SCENES: MappingProxyType[str, Callable[[], Scene]] = MappingProxyType({
    "living_room": build_living_room, "bedroom": build_bedroom, "stair_room": build_stair_room,
})

# Points on each built-in where a person can be placed: the sofa seat, the mattress, a chair seat.
BUILTIN_POINTS: MappingProxyType[str, tuple[float, float, float]] = MappingProxyType({
    "living_room": (0.0, 0.45, -1.35), "bedroom": (0.2, 0.5, 0.0), "stair_room": (-1.2, 0.47, 0.6),
})


def builtin_scene_names() -> tuple[str, ...]:
    return tuple(BUILTIN_SCENES)


@functools.cache
def builtin_scene(name: str) -> Scene:
    """A built-in scene by name, built once per process (its arrays are read-only)."""
    if name not in BUILTIN_SCENES:
        raise InputError(f"unknown built-in scene {name!r}; choose one of {', '.join(BUILTIN_SCENES)}")
    return BUILTIN_SCENES[name]()


# --- user scene files ----------------------------------------------------------------------------


def _scene_bytes(source, name: str) -> bytes:
    return read_bounded(source, name, MAX_SCENE_BYTES, missing=f"{name!r}: no scene file was found",
                        empty=f"{name!r} is empty; a scene is a mesh file ({', '.join(SCENE_EXTENSIONS)})")


def load_scene_file(source, name: str | None = None, *, up_axis: str = "y") -> Scene:
    """Load a user's scene mesh (a path or bytes; ``name`` gives the format) in our Y-up frame."""
    if up_axis not in UP_AXES:
        raise InputError(f"up axis must be one of {', '.join(UP_AXES)}, got {up_axis!r}")
    display = PurePosixPath(str(name if name is not None else source).replace("\\", "/")).name
    extension = PurePosixPath(display).suffix.lower()
    if extension not in SCENE_EXTENSIONS:
        raise InputError(f"{display!r}: unknown scene file type {extension or '(none)'!r}; "
                         f"accepted are {', '.join(SCENE_EXTENSIONS)}")
    data = _scene_bytes(source, display)
    vertices, faces = _parse_mesh(data, display, extension)
    return checked_scene(display, vertices, faces, up_axis)


def _declared_counts(data: bytes, extension: str) -> dict[str, int]:
    """Element counts a PLY or OFF header declares, read before any parser allocates arrays for them."""
    if extension == ".ply":
        header = data[:4096].split(b"end_header")[0].decode("latin-1").split("\n")
        return {words[1]: int(words[2]) for words in (line.split() for line in header)
                if len(words) == 3 and words[0] == "element" and words[2].isdigit()}
    if extension == ".off":
        lines = [line.split("#")[0].strip() for line in data[:4096].decode("latin-1").split("\n")]
        numbers = " ".join(line for line in lines if line).removeprefix("OFF").split()[:2]
        return dict(zip(("vertex", "face"), (int(word) for word in numbers if word.isdigit())))
    return {}


def _parse_mesh(data: bytes, name: str, extension: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse from memory (no resolver: the file cannot make us read other files)."""
    for element, count in _declared_counts(data, extension).items():
        if count > (MAX_SCENE_VERTICES if element == "vertex" else MAX_SCENE_FACES):
            raise InputError(f"{name!r} declares {count} {element} elements; at most {MAX_SCENE_VERTICES} vertices "
                             f"and {MAX_SCENE_FACES} faces are accepted")
    if extension in (".obj", ".off"):
        data = objects._as_text_bytes(data, name, extension)
    try:
        loaded = trimesh.load(io.BytesIO(data), file_type=extension[1:], process=False, skip_materials=True,
                              maintain_order=True)
        return objects._trimesh_parts(loaded)
    except InputError:
        raise
    except Exception as error:  # a hostile file can break a parser in any way; the user gets an answer
        raise InputError(f"{name!r} could not be read as a {extension} mesh ({type(error).__name__}); "
                         f"accepted are {', '.join(SCENE_EXTENSIONS)}") from error


# --- the point -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenePoint:
    """The user's point checked against the scene.

    point: (3,) the given point.  nearest: (3,) the closest surface point.  distance: metres between them.
    normal: (3,) unit normal of the closest face.  face: that face's id.
    """

    point: np.ndarray
    nearest: np.ndarray
    distance: float
    normal: np.ndarray
    face: int


def closest_surface_point(scene: Scene, point) -> ScenePoint:
    point = np.asarray(point, dtype=np.float64)
    squared, faces, closest = igl.point_mesh_squared_distance(point[None], scene.vertices, scene.faces)
    face = int(faces[0])
    return ScenePoint(point, closest[0], float(np.sqrt(squared[0])), scene.face_normals[face], face)


def check_point(scene: Scene, point, tolerance: float = POINT_TOLERANCE) -> ScenePoint:
    """The point as three finite numbers within ``tolerance`` of the surface, else InputError with a suggestion."""
    try:
        array = np.asarray(point, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise InputError(f"the point must be three numbers x, y, z in metres, got {point!r}") from error
    if array.shape != (3,) or not np.isfinite(array).all():
        raise InputError(f"the point must be three finite numbers x, y, z in metres, got {point!r}")
    checked = closest_surface_point(scene, array)
    if checked.distance > tolerance:
        suggestion = ", ".join(f"{value:.3f}" for value in checked.nearest)
        raise InputError(f"the point is {checked.distance:.2f} m from the scene's surface; it must lie on or within "
                         f"{tolerance} m of it (the closest surface point is {suggestion})")
    return checked
