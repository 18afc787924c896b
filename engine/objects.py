"""Objects that a body touches: built-in procedural meshes, and safe loading of the user's object files.

Built-ins
    ``BUILTIN_OBJECTS`` maps a name to a builder written here in numpy (boxes, lathe surfaces,
    swept tubes, extruded outlines), so that the demo always has objects without third-party
    assets. Metres, Y up, bounding box centred on the origin. Every part is a closed surface with
    counter-clockwise (outward) winding and no degenerate faces; parts may overlap (a chair's legs
    enter its seat), so a built-in is watertight part by part.

User files (``load_object_file``)
    Meshes: .obj .ply .off .stl .glb (through trimesh). Point clouds: .ply without faces, .npy
    (N, 3), .npz with ``points`` (optional ``faces``: then it is a mesh), and PIAD .txt rows.
    The bytes are hostile until checked: size, counts, finiteness, face ids and array headers are
    all checked before anything large is allocated, and every refusal is an ``InputError`` that
    says what was wrong and what is accepted.
"""
from __future__ import annotations

import functools
import io
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Callable

import numpy as np
import trimesh

from engine.contact.vocabulary import resolve_object_label
from engine.errors import InputError
from engine.mesh import as_faces, as_vertices

MAX_OBJECT_BYTES = 50 * 1024 ** 2
MAX_OBJECT_POINTS = 100_000
MAX_OBJECT_FACES = 200_000
MAX_NAME_LENGTH = 255
MESH_EXTENSIONS: tuple[str, ...] = (".obj", ".ply", ".off", ".stl", ".glb")
POINT_EXTENSIONS: tuple[str, ...] = (".npy", ".npz", ".txt")
ACCEPTED = ("meshes (.obj, .ply, .off, .stl, .glb) or point clouds (.ply without faces, .npy of shape (N, 3), "
            ".npz with 'points' and optional 'faces', PIAD .txt rows of x y z [17 affordance values])")
_DEGENERATE_AREA = 1e-12  # doubled face area, relative to the squared bounding-box extent


@dataclass(frozen=True, eq=False)
class ObjectGeometry:
    """One object mesh or point cloud.

    name: display name (a built-in's name, or the uploaded file's name).
    class_name: a label of ``engine.contact.vocabulary.OBJECT_LABELS``.
    vertices: (V, 3) float32, read-only, metres (for uploads: whatever unit the file used).
    faces: (F, 3) int64 vertex ids, read-only; ``None`` for a point cloud.
    """

    name: str
    class_name: str
    vertices: np.ndarray
    faces: np.ndarray | None = None

    def __post_init__(self):
        # Private read-only copies: a cached built-in is shared, so nobody may edit it in place.
        vertices = np.array(self.vertices, dtype=np.float32, order="C")
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            raise InputError(f"object vertices must have shape (V, 3), got {vertices.shape}")
        vertices.flags.writeable = False
        object.__setattr__(self, "vertices", vertices)
        if self.faces is not None:
            faces = np.array(self.faces, dtype=np.int64, order="C")
            if faces.ndim != 2 or faces.shape[1] != 3:
                raise InputError(f"object faces must have shape (F, 3), got {faces.shape}")
            faces.flags.writeable = False
            object.__setattr__(self, "faces", faces)

    @property
    def is_mesh(self) -> bool:
        return self.faces is not None

    @property
    def topology(self) -> str:
        """Objects have no shared topology: per-vertex arrays are tied to this vertex count only."""
        return f"points-{len(self.vertices)}"


# --- procedural geometry -------------------------------------------------------------------------
#
# Every closed part is a *loft*: a sequence of rings of K points each, optionally starting and
# ending in a single pole point. Consecutive rings are stitched with quads (two triangles) and
# poles with fans. With d the direction from one ring to the next and a the direction along a ring,
# faces point along d x a, so each shape below orders its rings to make that outward.


def _loft(rings: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stitch rings ((K, 3) arrays, or (1, 3) poles at either end) into one closed triangle surface."""
    starts = np.cumsum([0] + [len(ring) for ring in rings])
    faces = []
    for index in range(len(rings) - 1):
        low, high = starts[index], starts[index + 1]
        count = max(len(rings[index]), len(rings[index + 1]))
        j = np.arange(count)
        k = (j + 1) % count
        if len(rings[index]) == 1:  # bottom pole: one fan
            faces.append(np.stack([np.full(count, low), high + j, high + k], 1))
        elif len(rings[index + 1]) == 1:  # top pole: one fan
            faces.append(np.stack([low + j, np.full(count, high), low + k], 1))
        else:
            faces.append(np.stack([low + j, high + j, high + k], 1))
            faces.append(np.stack([low + j, high + k, low + k], 1))
    return np.concatenate(rings).astype(np.float64), np.concatenate(faces).astype(np.int64)


def _combine(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate closed parts into one mesh (the parts stay separate components)."""
    offsets = np.cumsum([0] + [len(vertices) for vertices, _ in parts])
    vertices = np.concatenate([vertices for vertices, _ in parts])
    faces = np.concatenate([faces + offset for (_, faces), offset in zip(parts, offsets)])
    return vertices, faces


def _resample(points, step: float) -> np.ndarray:
    """A polyline with extra points so that no segment is longer than ``step``; the given points stay."""
    points = np.asarray(points, dtype=np.float64)
    out = []
    for start, end in zip(points[:-1], points[1:]):
        pieces = max(1, int(np.ceil(np.linalg.norm(end - start) / step - 1e-9)))
        out.extend(start + (end - start) * t for t in np.arange(pieces) / pieces)
    out.append(points[-1])
    return np.array(out)


def _resample_closed(outline, step: float) -> np.ndarray:
    """``_resample`` of a closed outline (the closing segment included, the first point not repeated)."""
    outline = np.asarray(outline, dtype=np.float64)
    return _resample(np.concatenate([outline, outline[:1]]), step)[:-1]


def _lathe(profile, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Revolve a (K, 2) profile of (radius, y) about the Y axis; radius-0 end points become poles.

    Walk the profile so that the solid is on its left when drawn with r to the right and y up
    (outside upwards, inside downwards): then the faces point outward.
    """
    profile = np.asarray(profile, dtype=np.float64)
    theta = 2 * np.pi * np.arange(segments) / segments
    rings = []
    for radius, y in profile:
        if radius <= 0:
            rings.append(np.array([[0.0, y, 0.0]]))
        else:
            rings.append(np.stack([radius * np.cos(theta), np.full(segments, y), radius * np.sin(theta)], 1))
    return _loft(rings)


def _counter_clockwise(outline: np.ndarray) -> np.ndarray:
    """Order an (x, z) outline counter-clockwise in the x-z plane (shoelace area > 0), as ``_prism`` needs."""
    x, z = outline[:, 0], outline[:, 1]
    area = np.sum(x * np.roll(z, -1) - np.roll(x, -1) * z)
    return outline if area > 0 else outline[::-1]


def _prism(outline, y_range: tuple[float, float], step: float) -> tuple[np.ndarray, np.ndarray]:
    """Extrude a convex (x, z) outline along Y from y_range[0] to y_range[1], with gridded caps.

    The caps are concentric copies of the outline shrunk towards its centroid (a convex outline
    keeps every cap triangle non-degenerate), so the surface has vertices inside its faces too:
    the painter needs them.
    """
    outline = _counter_clockwise(_resample_closed(outline, step))
    centroid = outline.mean(0)
    radius = np.linalg.norm(outline - centroid, axis=1).max()
    cap_rings = max(1, int(np.ceil(radius / step)))
    layers = max(1, int(np.ceil((y_range[1] - y_range[0]) / step)))
    def at(scale: float, y: float) -> np.ndarray:
        shrunk = centroid + scale * (outline - centroid)
        return np.column_stack([shrunk[:, 0], np.full(len(outline), y), shrunk[:, 1]])

    scales = np.arange(1, cap_rings + 1) / cap_rings
    rings = [np.array([[centroid[0], y_range[0], centroid[1]]])]
    rings += [at(scale, y_range[0]) for scale in scales]
    rings += [at(1.0, y) for y in np.linspace(*y_range, layers + 1)[1:]]
    rings += [at(scale, y_range[1]) for scale in scales[::-1][1:]]
    rings.append(np.array([[centroid[0], y_range[1], centroid[1]]]))
    return _loft(rings)


def _box(low, high, step: float) -> tuple[np.ndarray, np.ndarray]:
    """An axis-aligned box from corner ``low`` to corner ``high`` (x, y, z), gridded at about ``step``."""
    (x0, y0, z0), (x1, y1, z1) = low, high
    return _prism([(x0, z0), (x1, z0), (x1, z1), (x0, z1)], (y0, y1), step)


def _tube(path, radius: float, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Sweep a circle along a path in the XY plane, closing both ends with flat caps."""
    path = np.asarray(path, dtype=np.float64)
    tangent = np.gradient(path, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    binormal = np.array([0.0, 0.0, 1.0])
    normal = np.cross(tangent, binormal)  # tangent x binormal = normal makes the faces point outward
    phi = 2 * np.pi * np.arange(segments) / segments
    rings = [point + radius * (np.cos(phi)[:, None] * n + np.sin(phi)[:, None] * binormal)
             for point, n in zip(path, normal)]
    return _loft([path[:1]] + rings + [path[-1:]])


def _rotate_flat(part: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Turn a part built along Y to lie along Z: (x, y, z) -> (x, -z, y), a proper rotation (winding kept)."""
    vertices, faces = part
    return np.column_stack([vertices[:, 0], -vertices[:, 2], vertices[:, 1]]), faces


def _geometry(name: str, class_name: str, part: tuple[np.ndarray, np.ndarray]) -> ObjectGeometry:
    """Centre the bounding box on the origin and freeze."""
    vertices, faces = part
    centre = (vertices.min(0) + vertices.max(0)) / 2
    return ObjectGeometry(name, resolve_object_label(class_name), vertices - centre, faces)


def _arc(centre, radius: float, start: float, stop: float, count: int) -> np.ndarray:
    """Points (radius, y) on a circular arc in the profile plane, angles in radians."""
    angles = np.linspace(start, stop, count)
    return np.column_stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)])


def _rounded_rectangle(low, high, radius: float, per_corner: int = 5) -> np.ndarray:
    """A convex outline: the rectangle from ``low`` to ``high`` with rounded corners, counter-clockwise."""
    (x0, y0), (x1, y1) = low, high
    centres = [(x1 - radius, y1 - radius), (x0 + radius, y1 - radius),
               (x0 + radius, y0 + radius), (x1 - radius, y0 + radius)]
    return np.concatenate([_arc(centre, radius, quarter * np.pi / 2, (quarter + 1) * np.pi / 2, per_corner)
                           for quarter, centre in enumerate(centres)])


def build_chair() -> ObjectGeometry:
    """A dining chair: 44 x 90 x 42 cm, seat at 47 cm, four legs and a back panel."""
    step, leg, seat_y = 0.03, 0.035, 0.43
    legs = [_box((x, 0.0, z), (x + leg, seat_y + 0.01, z + leg), step)
            for x in (-0.22, 0.22 - leg) for z in (-0.21, 0.21 - leg)]
    seat = _box((-0.22, seat_y, -0.21), (0.22, seat_y + 0.04, 0.21), step)
    back = _box((-0.22, seat_y + 0.02, -0.21), (0.22, 0.90, -0.18), step)
    return _geometry("chair", "chair", _combine(*legs, seat, back))


def build_table() -> ObjectGeometry:
    """A table: 120 x 75 x 75 cm, a 4 cm top on four legs."""
    step, leg = 0.05, 0.05
    legs = [_box((x, 0.0, z), (x + leg, 0.72, z + leg), step) for x in (-0.55, 0.5) for z in (-0.32, 0.27)]
    top = _box((-0.6, 0.71, -0.375), (0.6, 0.75, 0.375), step)
    return _geometry("table", "table", _combine(*legs, top))


def build_bed() -> ObjectGeometry:
    """A double bed: a 2 x 1.4 m frame, a mattress on it, and a headboard at -X."""
    step = 0.12
    frame = _box((-1.0, 0.0, -0.7), (1.0, 0.3, 0.7), step)
    mattress = _box((-0.97, 0.29, -0.68), (0.99, 0.5, 0.68), step)
    headboard = _box((-1.06, 0.0, -0.72), (-0.98, 0.95, 0.72), step)
    return _geometry("bed", "bed", _combine(frame, mattress, headboard))


def build_mug() -> ObjectGeometry:
    """A mug: 8 cm wide, 9.5 cm tall, 5 mm walls, and a D-shaped handle whose ends sit inside the wall."""
    outer, wall, height, floor, step = 0.04, 0.005, 0.095, 0.008, 0.005
    profile = np.concatenate([[(0.0, 0.0), (outer - 0.003, 0.0)],
                              _arc((outer - 0.003, 0.003), 0.003, -np.pi / 2, 0, 5)[1:],
                              _arc((outer - wall / 2, height), wall / 2, 0, np.pi, 7),
                              [(outer - wall, floor), (0.0, floor)]])
    body = _lathe(_resample(profile, step), segments=40)
    mid, half, reach, inset = 0.05, 0.028, 0.014, 0.002
    stub = lambda y: _resample([(outer - inset, y, 0.0), (outer + reach, y, 0.0)], 0.004)
    bend = [(outer + reach + half * np.sin(a), mid + half * np.cos(a), 0.0) for a in np.linspace(0, np.pi, 25)]
    path = np.concatenate([stub(mid + half)[:-1], bend, stub(mid - half)[::-1][1:]])
    return _geometry("mug", "mug", _combine(body, _tube(path, 0.006, segments=12)))


def build_bottle() -> ObjectGeometry:
    """A capped bottle, 7 cm wide and 25 cm tall (0.73 l by outer volume), with a shoulder, a neck and a lip."""
    radius, neck, step = 0.035, 0.013, 0.006
    shoulder = [(neck + (radius - neck) * (1 + np.cos(np.pi * t)) / 2, 0.16 + 0.05 * t) for t in np.linspace(0, 1, 12)]
    profile = np.concatenate([[(0.0, 0.0), (radius - 0.004, 0.0)],
                              _arc((radius - 0.004, 0.004), 0.004, -np.pi / 2, 0, 5)[1:],
                              shoulder, [(neck, 0.235), (neck + 0.002, 0.236), (neck + 0.002, 0.25), (0.0, 0.25)]])
    return _geometry("bottle", "bottle", _lathe(_resample(profile, step), segments=32))


def build_bowl() -> ObjectGeometry:
    """A bowl: 16 cm wide, 6.5 cm tall, a 4 mm rounded rim and a 5 mm floor on a small foot."""
    radius, foot, height, wall, floor = 0.08, 0.035, 0.065, 0.004, 0.005
    t = np.linspace(0, np.pi / 2, 16)
    outside = np.column_stack([foot + (radius - foot) * np.sin(t), height * (1 - np.cos(t))])
    inside = np.column_stack([(radius - wall) * np.sin(t), floor + (height - floor) * (1 - np.cos(t))])[::-1]
    rim = _arc((radius - wall / 2, height), wall / 2, 0, np.pi, 7)[1:-1]
    profile = np.concatenate([[(0.0, 0.0)], outside, rim, inside])
    return _geometry("bowl", "bowl", _lathe(_resample(profile, 0.006), segments=48))


def build_knife() -> ObjectGeometry:
    """A kitchen knife 30 cm long along +X: an 18 cm blade 2 mm thick and a 12 cm handle; the blade's
    flat is the XY plane, its edge at -Y."""
    x = np.linspace(0.0, 0.18, 13)
    edge = np.column_stack([x, -0.013 + 0.023 * (x / 0.18) ** 2.5])  # convex edge curving up to the tip
    blade = np.concatenate([edge, [(0.0, 0.012)]])
    handle = _rounded_rectangle((-0.115, -0.011), (0.005, 0.011), 0.004)
    # Outlines are (x, y) in the final frame; _prism takes (x, z) and _rotate_flat maps z to -y.
    flip = lambda outline: outline * (1.0, -1.0)
    parts = [_rotate_flat(_prism(flip(blade), (-0.001, 0.001), 0.008)),
             _rotate_flat(_prism(flip(handle), (-0.008, 0.008), 0.008))]
    return _geometry("knife", "knife", _combine(*parts))


def _turn_about_y(part: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Turn a part a quarter about Y: (x, y, z) -> (z, y, -x), a proper rotation (winding kept)."""
    vertices, faces = part
    return np.column_stack([vertices[:, 2], vertices[:, 1], -vertices[:, 0]]), faces


def _moved(part: tuple[np.ndarray, np.ndarray], offset) -> tuple[np.ndarray, np.ndarray]:
    vertices, faces = part
    return vertices + np.asarray(offset, dtype=np.float64), faces


def _cylinder_along_z(radius: float, half_length: float, segments: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """A closed cylinder on the Z axis (a lathe about Y turned flat)."""
    profile = [(0.0, -half_length), (radius, -half_length), (radius, half_length), (0.0, half_length)]
    return _rotate_flat(_lathe(_resample(profile, step), segments))


def build_sofa() -> ObjectGeometry:
    """A three-seat sofa: 200 x 85 x 90 cm, seat top at 45 cm, a back cushion at -Z and two armrests."""
    step = 0.1
    feet = [_box((x, 0.0, z), (x + 0.05, 0.09, z + 0.05), step) for x in (-0.95, 0.9) for z in (-0.42, 0.37)]
    base = _box((-1.0, 0.08, -0.45), (1.0, 0.45, 0.45), step)
    back = _box((-1.0, 0.4, -0.45), (1.0, 0.85, -0.25), step)
    arms = [_box((x, 0.4, -0.3), (x + 0.18, 0.62, 0.45), step) for x in (-1.0, 0.82)]
    return _geometry("sofa", "couch", _combine(*feet, base, back, *arms))


def build_bicycle() -> ObjectGeometry:
    """A bicycle 170 cm long along X: 66 cm wheels, a diamond frame, a saddle at 90 cm and a handlebar."""
    radius, tube = 0.33, 0.018
    arc = lambda centre: [(centre + radius * np.cos(a), radius + radius * np.sin(a), 0.0)
                          for a in np.linspace(0.05, 2 * np.pi - 0.05, 48)]
    wheels = [_tube(arc(x), 0.02, 10) for x in (-0.52, 0.52)]
    crank, seat, head, rear, front = (0.0, 0.32, 0.0), (-0.15, 0.82, 0.0), (0.42, 0.82, 0.0), (-0.52, 0.33, 0.0), (0.52, 0.33, 0.0)
    frame = [_tube(_resample([a, b], 0.05), tube, 8) for a, b in
             ((crank, seat), (crank, head), (seat, head), (rear, crank), (rear, seat), (head, front))]
    saddle = _box((-0.27, 0.84, -0.07), (-0.03, 0.9, 0.07), 0.04)
    stem = _tube(_resample([head, (0.45, 0.98, 0.0)], 0.05), tube, 8)
    bar = _moved(_cylinder_along_z(0.014, 0.28, 10, 0.05), (0.45, 1.0, 0.0))
    hub = _moved(_cylinder_along_z(0.04, 0.05, 12, 0.02), crank)
    return _geometry("bicycle", "bicycle", _combine(*wheels, *frame, saddle, stem, bar, hub))


def build_skateboard() -> ObjectGeometry:
    """A skateboard: an 80 x 20 cm deck 2 cm thick on two trucks and four 5.4 cm wheels."""
    deck = _prism(_rounded_rectangle((-0.4, -0.1), (0.4, 0.1), 0.09, per_corner=7), (0.075, 0.095), 0.03)
    trucks = [_box((x - 0.03, 0.045, -0.08), (x + 0.03, 0.076, 0.08), 0.03) for x in (-0.27, 0.27)]
    wheels = [_moved(_cylinder_along_z(0.027, 0.02, 16, 0.01), (x, 0.027, z)) for x in (-0.27, 0.27) for z in (-0.09, 0.09)]
    return _geometry("skateboard", "skateboard", _combine(deck, *trucks, *wheels))


def build_backpack() -> ObjectGeometry:
    """A backpack: a 30 x 45 x 18 cm body with rounded sides, a front pocket at +Z and two shoulder
    straps on its back (-Z)."""
    body = _prism(_rounded_rectangle((-0.15, -0.09), (0.15, 0.09), 0.05), (0.0, 0.45), 0.04)
    pocket = _prism(_rounded_rectangle((-0.11, 0.06), (0.11, 0.14), 0.025), (0.05, 0.25), 0.03)
    strap = lambda x: _turn_about_y(_tube([(0.09 + 0.07 * np.sin(a), 0.22 + 0.19 * np.cos(a), x)
                                          for a in np.linspace(0.0, np.pi, 14)], 0.012, 8))
    # The tube is drawn in x-y; turning it about Y puts its bulge behind the back panel (-Z).
    return _geometry("backpack", "backpack", _combine(body, pocket, strap(0.08), strap(-0.08)))


BUILTIN_OBJECTS: MappingProxyType[str, Callable[[], ObjectGeometry]] = MappingProxyType({
    "chair": build_chair, "table": build_table, "bed": build_bed, "mug": build_mug,
    "bottle": build_bottle, "bowl": build_bowl, "knife": build_knife, "sofa": build_sofa,
    "bicycle": build_bicycle, "skateboard": build_skateboard, "backpack": build_backpack,
})


def builtin_object_names() -> tuple[str, ...]:
    return tuple(BUILTIN_OBJECTS)


def builtin_object(name: str) -> ObjectGeometry:
    """A built-in object by name, built once per process (its arrays are read-only, so sharing is safe)."""
    if name not in BUILTIN_OBJECTS:
        raise InputError(f"unknown built-in object {name!r}; choose one of {', '.join(BUILTIN_OBJECTS)}")
    return _build_cached(name)


@functools.cache
def _build_cached(name: str) -> ObjectGeometry:
    return BUILTIN_OBJECTS[name]()


# --- user files ----------------------------------------------------------------------------------


def _display_name(name) -> str:
    """The file's base name: a client may send a path, and only the last component is meaningful."""
    if not isinstance(name, str) or not name.strip():
        raise InputError("the object needs a file name such as 'mug.obj', to tell its format")
    base = PurePosixPath(name.replace("\\", "/")).name
    if not base or len(base) > MAX_NAME_LENGTH:
        raise InputError(f"the object file name must be 1 to {MAX_NAME_LENGTH} characters, got {len(base)}")
    return base


def _extension(name: str, source) -> str:
    extension = PurePosixPath(name).suffix.lower()
    if not extension and isinstance(source, (str, Path)):
        extension = Path(source).suffix.lower()
    if extension not in MESH_EXTENSIONS + POINT_EXTENSIONS:
        raise InputError(f"{name!r}: unknown object file type {extension or '(none)'!r}; accepted are {ACCEPTED}")
    return extension


def _read_bytes(source, name: str) -> bytes:
    """The upload's bytes, refusing anything over ``MAX_OBJECT_BYTES`` before reading it all."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{name!r}: no object file at {path}")
        if path.stat().st_size > MAX_OBJECT_BYTES:  # refused by its size: not a byte read
            raise InputError(f"{name!r} is larger than {MAX_OBJECT_BYTES // 1024 ** 2} MiB; "
                             f"at most {MAX_OBJECT_BYTES} bytes are accepted")
        with open(path, "rb") as handle:
            # read in chunks: read(n) would reserve n bytes up front, 50 MiB for every small file
            data = b"".join(iter(lambda: handle.read(2**20), b""))[:MAX_OBJECT_BYTES + 1]
    else:
        raise InputError(f"an object file must be given as a path or bytes, got {type(source).__name__}")
    if len(data) > MAX_OBJECT_BYTES:
        raise InputError(f"{name!r} is larger than {MAX_OBJECT_BYTES // 1024 ** 2} MiB; "
                         f"at most {MAX_OBJECT_BYTES} bytes are accepted")
    if not data:
        raise InputError(f"{name!r} is empty; expected one of {ACCEPTED}")
    return data


def _npy_array(data: bytes, what: str, max_elements: int) -> np.ndarray:
    """Read an .npy payload after checking its header: numeric dtype and a bounded size, no pickles."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            raise InputError(f"{what} uses .npy format version {version}; versions 1.0 and 2.0 are accepted")
        shape, _, dtype = read_header[version](stream)
    except (ValueError, SyntaxError, EOFError, tokenize.TokenError) as error:  # numpy tokenizes the header
        raise InputError(f"{what} is not a readable .npy array ({error}); save it with numpy.save") from error
    if dtype.kind not in "fiu":
        raise InputError(f"{what} holds {dtype} values (objects or records are never loaded); "
                         "save a plain float or integer array")
    if int(np.prod(shape)) > max_elements:
        raise InputError(f"{what} has shape {shape}; at most {max_elements // 3} rows of 3 values are accepted")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InputError(f"{what} is truncated or corrupt: {error}") from error


def _load_npy(data: bytes, name: str) -> tuple[np.ndarray, None]:
    return _npy_array(data, repr(name), MAX_OBJECT_POINTS * 3), None


def _npz_member(archive: zipfile.ZipFile, key: str, name: str, max_elements: int) -> np.ndarray | None:
    member = f"{key}.npy"
    if member not in archive.namelist():
        return None
    if archive.getinfo(member).file_size > MAX_OBJECT_BYTES:  # the zip reader never reads past this size
        raise InputError(f"{name!r}: '{key}' unpacks to more than {MAX_OBJECT_BYTES} bytes")
    return _npy_array(archive.read(member), f"{name!r} '{key}'", max_elements)


def _load_npz(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``points`` (or ``vertices``) and optional ``faces`` from an .npz, read member by member."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            points = _npz_member(archive, "points", name, MAX_OBJECT_POINTS * 3)
            if points is None:
                points = _npz_member(archive, "vertices", name, MAX_OBJECT_POINTS * 3)
            faces = _npz_member(archive, "faces", name, MAX_OBJECT_FACES * 3)
            keys = [member.removesuffix(".npy") for member in archive.namelist()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, RuntimeError,
            NotImplementedError) as error:
        raise InputError(f"{name!r} is not a readable .npz archive ({error}); save it with numpy.savez") from error
    if points is None:
        raise InputError(f"{name!r} has no 'points' array (found {keys[:10]}); "
                         "an .npz object needs 'points' (N, 3) and optionally 'faces' (F, 3)")
    return points, faces


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _load_txt(data: bytes, name: str) -> tuple[np.ndarray, None]:
    """PIAD-style rows: x y z, optionally followed by values (PIAD: 17 affordances), optionally after
    leading text columns (a class name) or, for 4 or 21 numeric columns, an integer id column."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{name!r} is not UTF-8 text ({error.reason} at byte {error.start}); "
                         "a .txt object holds rows of numbers 'x y z [a1 .. a17]'") from error
    if text.count("\n") > MAX_OBJECT_POINTS + 1000:
        raise InputError(f"{name!r} has more than {MAX_OBJECT_POINTS} rows; "
                         f"at most {MAX_OBJECT_POINTS} points are accepted")
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise InputError(f"{name!r} has no rows; a .txt object holds rows 'x y z [a1 .. a17]'")
    skip = next((index for index, token in enumerate(rows[0]) if _is_number(token)), len(rows[0]))
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise InputError(f"{name!r}: rows have different numbers of columns ({sorted(widths)[:5]}); "
                         "every row needs the same")
    try:
        table = np.array([row[skip:] for row in rows], dtype=np.float64)
    except ValueError as error:
        raise InputError(f"{name!r}: a row has a column that is not a number ({error})") from error
    if table.shape[1] in (4, 21) and np.all(table[:, 0] == np.round(table[:, 0])):
        table = table[:, 1:]  # a leading integer id column
    if table.shape[1] < 3:
        raise InputError(f"{name!r}: rows have {table.shape[1]} numeric columns; at least x y z are needed")
    return table[:, :3], None


def _trimesh_parts(loaded) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertices and faces of whatever trimesh returned: a mesh, a point cloud, or a scene (concatenated)."""
    if isinstance(loaded, trimesh.Scene):
        geometry = loaded.dump()  # node transforms applied
        meshes = [item for item in geometry if isinstance(item, trimesh.Trimesh) and len(item.faces)]
        if meshes:
            return _combine(*((np.asarray(m.vertices), np.asarray(m.faces)) for m in meshes))
        points = [np.asarray(item.vertices) for item in geometry
                  if isinstance(item, (trimesh.PointCloud, trimesh.Trimesh))]
        return (np.concatenate(points) if points else np.zeros((0, 3))), None
    if isinstance(loaded, trimesh.Trimesh) and len(loaded.faces):
        return np.asarray(loaded.vertices), np.asarray(loaded.faces)
    if isinstance(loaded, (trimesh.Trimesh, trimesh.PointCloud)):
        return np.asarray(loaded.vertices), None
    raise InputError(f"the file holds a {type(loaded).__name__}, not a mesh or point cloud")


def _weldable(vertices) -> bool:
    """Welding rounds coordinates to integers; NaN or astronomically large ones (refused later) would overflow."""
    vertices = np.asarray(vertices)
    return len(vertices) > 0 and bool(np.isfinite(vertices).all()) and float(np.abs(vertices).max()) < 1e6


def _load_with_trimesh(data: bytes, name: str, extension: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse a mesh format from memory: no resolver, so the file cannot make us read other files."""
    _check_declared_counts(data, name, extension)
    if extension in (".obj", ".off"):
        data = _as_text_bytes(data, name, extension)
    try:
        loaded = trimesh.load(io.BytesIO(data), file_type=extension[1:], process=False, skip_materials=True,
                              maintain_order=True)
        if extension == ".stl" and isinstance(loaded, trimesh.Trimesh) and _weldable(loaded.vertices):
            loaded.merge_vertices()  # STL is a triangle soup: weld corners so that a vertex is a surface point
        return _trimesh_parts(loaded)
    except InputError:
        raise
    except Exception as error:  # a hostile file can break a parser in any way; the user gets an answer, not a 500
        raise InputError(f"could not read the mesh: {name!r} is not a well-formed {extension} file "
                         f"({_in_words(error)}); accepted are {ACCEPTED}") from error


def _in_words(error: Exception) -> str:
    """A parser's complaint without Python's exception name, or a plain phrase when it says nothing."""
    text = " ".join(str(error).split())[:160]
    return text if text and not text.isdigit() else "its contents do not follow the format"


def _check_declared_counts(data: bytes, name: str, extension: str) -> None:
    """Refuse PLY/OFF/binary-STL headers that declare more elements than accepted, before a parser
    allocates arrays for them."""
    declared: dict[str, int] = {}
    if extension == ".ply":
        end = data.find(b"end_header")  # the whole header, however many comments come first
        if end < 0 and data.lstrip()[:3].lower() == b"ply":
            raise InputError(f"could not read the mesh: {name!r} has no end_header line")
        header = data[:max(end, 0)].decode("latin-1").split("\n")
        for words in (line.split() for line in header):
            if len(words) == 3 and words[0] == "element":
                if not words[2].isdigit():
                    raise InputError(f"could not read the mesh: {name!r} declares {words[1]} count {words[2][:20]!r}")
                declared[words[1]] = max(declared.get(words[1], 0), int(words[2]))
    elif extension == ".off":
        numbers: list[str] = []
        for line in io.BytesIO(data):  # the first line with numbers, after any number of comments
            words = line.decode("latin-1").split("#")[0].strip().removeprefix("OFF").split()
            if words:
                numbers = words[:2]
                break
        declared = dict(zip(("vertex", "face"), (int(word) for word in numbers if word.isdigit())))
    elif extension == ".obj":  # OBJ declares nothing: count its vertex and face lines before parsing
        declared = {"vertex": data.count(b"\nv ") + data.startswith(b"v "),
                    "face": data.count(b"\nf ") + data.startswith(b"f ")}
    elif extension == ".stl" and len(data) >= 84 and not data.lstrip()[:5].lower().startswith(b"solid"):
        declared = {"face": int.from_bytes(data[80:84], "little")}
    for element, count in declared.items():
        limit = MAX_OBJECT_POINTS if element == "vertex" else MAX_OBJECT_FACES
        if count > limit:
            raise InputError(f"{name!r} declares {count} {element} elements; at most {MAX_OBJECT_POINTS} vertices "
                             f"and {MAX_OBJECT_FACES} faces are accepted")


def _as_text_bytes(data: bytes, name: str, extension: str) -> bytes:
    """OBJ and OFF are text: refuse binary data here, with a clear message, and hand the parser UTF-8."""
    if b"\0" in data:
        raise InputError(f"{name!r} holds binary data, but {extension} files are text; accepted are {ACCEPTED}")
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError:
        return data.decode("latin-1").encode("utf-8")  # legacy comments and material names


def _drop_degenerate(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces with a repeated vertex or (relative to the object's size) zero area carry no surface."""
    corners = vertices.astype(np.float64)[faces]
    area2 = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    extent = float(np.ptp(vertices.astype(np.float64), axis=0).max())
    repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
    return faces[(area2 > _DEGENERATE_AREA * extent ** 2) & ~repeated]


def _checked_vertices(vertices, name: str) -> np.ndarray:
    array = np.asarray(vertices)
    if array.ndim == 2 and array.shape[0] > MAX_OBJECT_POINTS:
        raise InputError(f"{name!r} has {array.shape[0]} points; at most {MAX_OBJECT_POINTS} are accepted "
                         "(decimate the mesh or subsample the cloud)")
    checked = as_vertices(array, name=f"{name!r} vertices").numpy()
    if float(np.abs(checked).max()) > float(np.finfo(np.float32).max):
        raise InputError(f"{name!r} has coordinates too large for float32; give them in metres")
    if float(np.ptp(checked, axis=0).max()) <= 0:
        raise InputError(f"{name!r} is degenerate: all its {len(checked)} points coincide")
    return checked.astype(np.float32)


def _checked_faces(faces, vertices: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(faces)
    if array.ndim == 2 and array.shape[0] > MAX_OBJECT_FACES:
        raise InputError(f"{name!r} has {array.shape[0]} faces; at most {MAX_OBJECT_FACES} are accepted")
    checked = as_faces(array, len(vertices), name=f"{name!r} faces").numpy()
    kept = _drop_degenerate(vertices, checked)
    if len(kept) == 0:
        raise InputError(f"{name!r}: all {len(checked)} faces have zero area; a mesh needs at least one real "
                         "triangle (or send the vertices as a point cloud)")
    return kept


_READERS: dict[str, Callable[[bytes, str], tuple[np.ndarray, np.ndarray | None]]] = {
    ".npy": _load_npy, ".npz": _load_npz, ".txt": _load_txt,
}


def load_object_file(source, name: str, *, class_name: str) -> ObjectGeometry:
    """Load a user's object upload (a path or the raw bytes); ``name`` is the file name and gives the format.

    ``class_name`` is free text resolved to a known object label ("coffee mug" -> "mug").
    Degenerate faces inside an otherwise valid mesh are dropped; everything else that is wrong is
    refused with an ``InputError``.
    """
    label = resolve_object_label(class_name)
    display = _display_name(name)
    extension = _extension(display, source)
    data = _read_bytes(source, display)
    if extension in _READERS:
        vertices, faces = _READERS[extension](data, display)
    else:
        vertices, faces = _load_with_trimesh(data, display, extension)
    vertices = _checked_vertices(vertices, display)
    faces = None if faces is None else _checked_faces(faces, vertices, display)
    return ObjectGeometry(display, label, vertices, faces)
