"""Render the demo's example images from our own geometry: the built-in open body, posed, with a
procedural object from ``engine.objects``. No third-party photos or meshes are involved.

Run from the repository root:  .venv/bin/python studio/examples/make_examples.py

Deterministic: the body, the objects, the poses and the CPU rasterizer have no randomness, so the
same code writes the same PNG bytes.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from engine.body import BodyModel, load_body  # noqa: E402
from engine.body.skeleton import BODY_JOINT_NAMES  # noqa: E402
from engine.mesh import unique_edges, vertex_normals  # noqa: E402
from engine.objects import builtin_object  # noqa: E402
from engine.render.cameras import FoVPerspectiveCamera  # noqa: E402
from engine.render.rasterizer import rasterize_meshes  # noqa: E402
from engine.render.shading import PhongMaterial, interpolate, phong_shade  # noqa: E402

OUTPUT_DIR = Path(__file__).resolve().parent
SIZE = 512
SUPERSAMPLE = 2  # render at 2x and average down: the rasterizer has one sample per pixel
FOV = 35.0
MATERIAL = PhongMaterial(ambient=0.42, diffuse=0.42, specular=0.12, shininess=24.0)
SKY, GROUND = np.array([0.93, 0.95, 0.98]), np.array([0.78, 0.80, 0.84])
FLOOR_COLOUR = (0.86, 0.86, 0.87)

# Clothes drawn on the rest (T-pose) template: a belt line, short sleeves, a collar and shoes, so the
# render reads as a dressed person rather than a grey mannequin. Heights in the open body's frame.
SKIN, SHIRT, TROUSERS, SHOES = (0.86, 0.68, 0.57), (0.25, 0.45, 0.70), (0.22, 0.24, 0.30), (0.15, 0.13, 0.12)
BELT_Y, COLLAR_Y, COLLAR_SLOPE, SLEEVE_X, SHOE_Y = -0.17, 0.245, 0.7, 0.36, -1.05
# The bone each aimed joint rotates: joint -> the child joint the bone points at in the rest pose.
BONE_CHILD = {
    "left_shoulder": "left_elbow", "left_elbow": "left_wrist", "right_shoulder": "right_elbow",
    "right_elbow": "right_wrist", "left_hip": "left_knee", "left_knee": "left_ankle",
    "right_hip": "right_knee", "right_knee": "right_ankle",
}


@dataclass(frozen=True)
class Part:
    """One coloured mesh of a scene. vertices (V, 3), faces (F, 3), colours (V, 3) in [0, 1], alpha (V,)."""

    vertices: np.ndarray
    faces: np.ndarray
    colours: np.ndarray
    alpha: np.ndarray


def solid(vertices, faces, colour, *, flat: bool = False) -> Part:
    """A one-colour opaque part; ``flat`` gives every face its own corners so boxes keep sharp edges."""
    vertices, faces = np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.int64)
    if flat:
        vertices, faces = vertices[faces].reshape(-1, 3), np.arange(faces.size).reshape(-1, 3)
    colours = np.tile(np.asarray(colour, dtype=np.float32), (len(vertices), 1))
    return Part(vertices, faces, colours, np.ones(len(vertices), dtype=np.float32))


# --- posing ----------------------------------------------------------------------------------------


def aimed_pose(body: BodyModel, aims: dict[str, tuple[float, float, float]]) -> torch.Tensor:
    """(1, 63) body pose that points each named joint's bone along a world direction.

    Joints are visited parents first; a joint's local rotation is the smallest rotation taking its
    rest bone onto the target seen from its (already rotated) parent frame.
    """
    rest = body.forward().joints[0].detach().numpy().astype(np.float64)
    world = [Rotation.identity()] * len(BODY_JOINT_NAMES)
    pose = np.zeros((len(BODY_JOINT_NAMES) - 1, 3))
    for index, name in enumerate(BODY_JOINT_NAMES):
        parent = body.parents[index]
        parent_world = world[parent] if parent >= 0 else Rotation.identity()
        local = Rotation.identity()
        if name in aims:
            bone = rest[BODY_JOINT_NAMES.index(BONE_CHILD[name])] - rest[index]
            target = parent_world.inv().apply(np.asarray(aims[name], dtype=np.float64))
            local = Rotation.align_vectors([target / np.linalg.norm(target)], [bone / np.linalg.norm(bone)])[0]
            pose[index - 1] = local.as_rotvec()
        world[index] = parent_world * local
    return torch.tensor(pose.reshape(1, -1), dtype=torch.float32)


def posed_body(body: BodyModel, aims) -> tuple[np.ndarray, np.ndarray]:
    """Posed vertices (V, 3) and joints (22, 3)."""
    with torch.no_grad():
        output = body.forward(body_pose=aimed_pose(body, aims))
    return output.vertices[0].numpy(), output.joints[0].numpy()


def clothing(template: np.ndarray, faces: np.ndarray, blur_steps: int = 2) -> np.ndarray:
    """(V, 3) colours from rest-pose positions; colours then follow the vertices into any pose.
    A little blurring over mesh edges softens the one-triangle staircase along each hem."""
    x, y = np.abs(template[:, 0]), template[:, 1]
    colours = np.tile(np.asarray(SHIRT, dtype=np.float64), (len(template), 1))
    colours[y < BELT_Y] = TROUSERS
    colours[(y > COLLAR_Y + COLLAR_SLOPE * x) & (x < 0.2)] = SKIN
    colours[x > SLEEVE_X] = SKIN
    colours[y < SHOE_Y] = SHOES
    edges = unique_edges(faces)
    adjacency = sp.coo_matrix((np.ones(2 * len(edges)), (edges.T.ravel(), edges[:, ::-1].T.ravel())),
                              shape=(len(template),) * 2).tocsr() + sp.identity(len(template), format="csr")
    smoothing = sp.diags(1 / np.asarray(adjacency.sum(1)).ravel()) @ adjacency
    for _ in range(blur_steps):
        colours = smoothing @ colours
    return colours.astype(np.float32)


def body_part(body: BodyModel, vertices: np.ndarray) -> Part:
    colours = clothing(body.v_template.numpy(), body.faces.numpy())
    return Part(vertices.astype(np.float32), body.faces.numpy(), colours, np.ones(len(vertices), dtype=np.float32))


def part_centre(body: BodyModel, vertices: np.ndarray, part: str) -> np.ndarray:
    return vertices[body.part_vertex_ids(part)].mean(0)


# --- floor, camera, shading ------------------------------------------------------------------------


def floor_part(parts: list[Part], floor_y: float, centre: np.ndarray, radius: float = 1.3, cells: int = 80) -> Part:
    """A floor disc under the scene that fades out at its rim, darkened under what stands near it
    (a soft contact shadow: the renderer has no shadow maps)."""
    axis = np.linspace(-radius, radius, cells + 1)
    gx, gz = np.meshgrid(axis + centre[0], axis + centre[2], indexing="ij")
    vertices = np.column_stack([gx.ravel(), np.full(gx.size, floor_y), gz.ravel()]).astype(np.float32)
    ids = np.arange(gx.size).reshape(cells + 1, cells + 1)
    quads = np.stack([ids[:-1, :-1], ids[1:, :-1], ids[1:, 1:], ids[:-1, 1:]], -1).reshape(-1, 4)
    faces = np.concatenate([quads[:, [0, 2, 1]], quads[:, [0, 3, 2]]])  # counter-clockwise seen from above
    occluders = np.concatenate([part.vertices[::4] for part in parts])
    occluders = occluders[occluders[:, 1] - floor_y < 0.6]  # higher points cast almost nothing
    height = np.clip(occluders[:, 1] - floor_y, 0, None)
    weight = np.exp(-height / 0.12)
    distance2 = ((vertices[:, None, [0, 2]] - occluders[None, :, [0, 2]]) ** 2).sum(-1)
    shadow = 1 - np.exp(-(weight[None] * np.exp(-distance2 / 0.01)).sum(1) / 25)
    colours = np.asarray(FLOOR_COLOUR, dtype=np.float32) * (1 - 0.45 * shadow[:, None])
    rim = np.hypot(vertices[:, 0] - centre[0], vertices[:, 2] - centre[2]) / radius
    alpha = np.clip((1 - rim) / 0.35, 0, 1) ** 1.5
    return Part(vertices, faces, colours.astype(np.float32), alpha.astype(np.float32))


def merge(parts: list[Part]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    offsets = np.cumsum([0] + [len(part.vertices) for part in parts])
    vertices = torch.from_numpy(np.concatenate([part.vertices for part in parts]))
    faces = torch.from_numpy(np.concatenate([part.faces + offset for part, offset in zip(parts, offsets)]))
    colours = torch.from_numpy(np.concatenate([part.colours for part in parts]))
    alpha = torch.from_numpy(np.concatenate([part.alpha for part in parts]))[:, None]
    return vertices, faces, colours, alpha


def background(size: int) -> torch.Tensor:
    """(size, size, 3) vertical gradient, light at the top."""
    t = torch.linspace(0, 1, size)[:, None, None]
    return (torch.from_numpy(SKY) * (1 - t) + torch.from_numpy(GROUND) * t).float().expand(size, size, 3)


def framing(parts: list[Part], margin: float = 1.1) -> tuple[np.ndarray, float]:
    """Camera target and distance that fit the parts' bounding box (height, or width seen from any
    side) in the field of view, with the box's front half in front of the target."""
    points = np.concatenate([part.vertices for part in parts])
    low, high = points.min(0), points.max(0)
    half_height, half_width = (high[1] - low[1]) / 2, float(np.hypot(*(high - low)[[0, 2]])) / 2
    return (low + high) / 2, margin * max(half_height, half_width) / np.tan(np.radians(FOV) / 2) + half_width


def render(parts: list[Part], floor: Part, *, elev: float, azim: float) -> Image.Image:
    """Shade the parts and the floor from a camera framing the parts, composited over the gradient."""
    target, dist = framing(parts)
    vertices, faces, colours, alpha = merge(parts + [floor])
    vertices = vertices - torch.from_numpy(np.asarray(target, dtype=np.float32))  # cameras look at the origin
    camera = FoVPerspectiveCamera.look_at(dist, elev, azim, fov=FOV)
    size = (SIZE * SUPERSAMPLE,) * 2
    fragments = rasterize_meshes(camera.transform_points_screen(vertices, size), faces, size)
    centre = camera.camera_centres()[0]
    lights = (tuple((centre + torch.tensor([1.5, 2.0, 0.0])).tolist()), (-2.5, 3.0, -1.0))
    shaded = phong_shade(fragments, faces, vertices, vertex_normals(vertices, faces), colours, camera.camera_centres(),
                         lights=lights, material=MATERIAL)[0]
    coverage = interpolate(fragments, faces, alpha)[0].clamp(0, 1)
    image = shaded * coverage + background(size[0]) * (1 - coverage)
    pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels).reduce(SUPERSAMPLE)


# --- the three scenes ------------------------------------------------------------------------------


def grounded(body: BodyModel, aims) -> tuple[np.ndarray, np.ndarray, float]:
    vertices, joints = posed_body(body, aims)
    return vertices, joints, float(vertices[:, 1].min())


def place(name: str, *, bottom=None, centre=None) -> np.ndarray:
    """A built-in's vertices moved so that its bounding-box bottom centre (or centre) lands on a point."""
    vertices = builtin_object(name).vertices.astype(np.float64)
    low, high = vertices.min(0), vertices.max(0)
    anchor = (low + high) / 2 if bottom is None else np.array([(low[0] + high[0]) / 2, low[1], (low[2] + high[2]) / 2])
    return vertices - anchor + np.asarray(bottom if bottom is not None else centre)


@dataclass(frozen=True)
class Composition:
    """One example scene before rendering: the posed body, the object where it stands, the floor and the view.

    body_vertices (V, 3) world; object_vertices (Vo, 3) world (the built-in's own vertices, moved); flat: draw
    the object with sharp edges.  The HOI examples (``make_hoi_examples.py``) read the same composition.
    """

    body_vertices: np.ndarray
    object_name: str
    object_vertices: np.ndarray
    colour: tuple[float, float, float]
    flat: bool
    floor_y: float
    floor_centre: np.ndarray
    elev: float
    azim: float


def person_chair(body: BodyModel) -> Composition:
    """Sitting on the chair, hands on the thighs: contact on the buttocks, thighs and back."""
    aims = {"left_hip": (0.06, -0.08, 1.0), "right_hip": (-0.06, -0.08, 1.0),
            "left_knee": (0.0, -1.0, 0.06), "right_knee": (0.0, -1.0, 0.06),
            "left_shoulder": (0.18, -1.0, 0.22), "right_shoulder": (-0.18, -1.0, 0.22),
            "left_elbow": (0.0, -0.8, 1.0), "right_elbow": (0.0, -0.8, 1.0)}
    vertices, _, floor_y = grounded(body, aims)
    seat = body.part_vertex_ids("hips")
    seat_height = 0.47  # the chair's seat top above its feet (engine/objects.py build_chair)
    back_z = vertices[seat, 2].min()
    chair_vertices = place("chair", bottom=(0.0, floor_y, back_z + 0.19))
    lift = floor_y + seat_height - vertices[seat, 1].min()  # sit on the seat; the floor follows the chair
    chair_vertices[:, 1] -= lift
    return Composition(vertices, "chair", chair_vertices, (0.55, 0.36, 0.22), True, floor_y - lift,
                       np.array([0.0, 0.0, 0.1]), 12, 35)


def person_bottle(body: BodyModel) -> Composition:
    """Standing, the right hand holding a bottle in front of the waist."""
    aims = {"right_shoulder": (-0.12, -1.0, 0.28), "right_elbow": (-0.05, -0.08, 1.0),
            "left_shoulder": (0.22, -1.0, 0.02), "left_elbow": (0.15, -1.0, 0.12)}
    vertices, _, floor_y = grounded(body, aims)
    hand = part_centre(body, vertices, "right_hand")
    bottle = place("bottle", centre=hand + np.array([0.0, 0.03, 0.0]))
    return Composition(vertices, "bottle", bottle, (0.20, 0.55, 0.35), False, floor_y, np.array([0.0, 0.0, 0.1]), 8, -30)


def person_bowl(body: BodyModel) -> Composition:
    """Standing, both hands holding a bowl by its sides in front of the stomach."""
    aims = {"left_shoulder": (0.1, -1.0, 0.3), "right_shoulder": (-0.1, -1.0, 0.3),
            "left_elbow": (-0.3, 0.05, 1.0), "right_elbow": (0.3, 0.05, 1.0)}
    vertices, _, floor_y = grounded(body, aims)
    left, right = part_centre(body, vertices, "left_hand"), part_centre(body, vertices, "right_hand")
    bowl = place("bowl", centre=(left + right) / 2 + np.array([0.0, 0.01, 0.0]))
    return Composition(vertices, "bowl", bowl, (0.93, 0.91, 0.86), False, floor_y, np.array([0.0, 0.0, 0.1]), 14, 25)


def render_composition(body: BodyModel, scene: Composition) -> Image.Image:
    parts = [body_part(body, scene.body_vertices),
             solid(scene.object_vertices, builtin_object(scene.object_name).faces, scene.colour, flat=scene.flat)]
    return render(parts, floor_part(parts, scene.floor_y, scene.floor_centre), elev=scene.elev, azim=scene.azim)


SCENES = {"person_chair": person_chair, "person_bottle": person_bottle, "person_bowl": person_bowl}


def main() -> None:
    body = load_body("openbody")
    for name, scene in SCENES.items():
        path = OUTPUT_DIR / f"{name}.png"
        render_composition(body, scene(body)).save(path, optimize=True)
        print(f"{path}: {path.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
