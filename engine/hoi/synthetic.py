"""Synthetic HOI scenes with known answers: the open body posed (sitting, leaning, standing, holding) with a
built-in object placed against it, a camera, and the ground truth every HOI test and benchmark checks.

``make_scene(name, azimuth)`` builds one: the object is slid along a direction until it touches the body
(a 4 mm gap), the contacts are the ground-truth proximity (vertices of each mesh within 2 cm of the other),
and ``render_mask`` draws the object's visible pixels (the body occludes it) with our rasterizer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from engine.body import load_body
from engine.body.skeleton import BODY_JOINT_NAMES
from engine.hoi.fit import canonical_object
from engine.hoi.geometry import umeyama
from engine.hoi.inputs import BodyInput, Contacts, Intrinsics, project
from engine.objects import builtin_object
from engine.render.cameras import FoVPerspectiveCamera
from engine.render.silhouette import depth_map

CONTACT_RADIUS = 0.02  # metres: ground-truth contacts are vertices this close to the other mesh
GAP = 0.004
SOURCE = "ground-truth proximity (2 cm)"


def _pose(**joints) -> torch.Tensor:
    """(1, 63) body pose from per-joint axis-angle vectors in degrees."""
    pose = np.zeros((len(BODY_JOINT_NAMES) - 1, 3))
    for name, degrees in joints.items():
        pose[BODY_JOINT_NAMES.index(name) - 1] = np.radians(degrees)
    return torch.tensor(pose.reshape(1, -1), dtype=torch.float32)


POSES = {
    "sitting": _pose(left_hip=(-90, 0, 0), right_hip=(-90, 0, 0), left_knee=(90, 0, 0), right_knee=(90, 0, 0),
                     left_shoulder=(0, 0, -70), right_shoulder=(0, 0, 70)),
    "leaning": _pose(spine1=(25, 0, 0), left_shoulder=(0, 60, -40), right_shoulder=(0, -60, 40),
                     left_elbow=(0, 10, 0), right_elbow=(0, -10, 0)),
    "standing": _pose(left_shoulder=(0, 0, -75), right_shoulder=(0, 0, 75), left_hip=(0, 0, 8), right_hip=(0, 0, -8)),
    "holding": _pose(right_shoulder=(0, 0, 80), left_shoulder=(0, 0, -75)),
}

# name -> (pose, object, object yaw in degrees, approach direction (the object moves along it), start offset)
SCENES = {
    "sit-chair": ("sitting", "chair", 0.0, (0, 1, 0), (0.0, -1.0, 0.02)),
    "sit-sofa": ("sitting", "sofa", 0.0, (0, 1, 0), (0.0, -1.0, -0.02)),
    "lean-table": ("leaning", "table", 0.0, (0, 1, 0), (0.0, -1.5, 0.62)),
    "stand-skateboard": ("standing", "skateboard", 90.0, (0, 1, 0), (0.0, -1.5, 0.0)),
    "wear-backpack": ("standing", "backpack", 180.0, (0, 0, 1), (0.0, 0.05, -0.8)),
    "hold-backpack": ("holding", "backpack", 90.0, (0, 1, 0), (-0.0, -0.9, 0.0)),
}


@dataclass(frozen=True)
class Scene:
    """A composed scene in the OpenCV camera frame of its image.

    body: the posed open body.  object_name.  R (3, 3), t (3,): the true object pose (``fit.HoiFit`` form).
    camera: intrinsics at ``image_size`` (H, W).  contacts: ground-truth proximity on both meshes.
    """

    name: str
    body: BodyInput
    object_name: str
    R: np.ndarray
    t: np.ndarray
    camera: Intrinsics
    image_size: tuple[int, int]
    contacts: Contacts


def _yawed(vertices: np.ndarray, degrees: float) -> np.ndarray:
    angle = np.radians(degrees)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    return vertices @ rotation.T


def slide_until_touching(body: np.ndarray, obj: np.ndarray, direction, gap: float = GAP) -> np.ndarray:
    """``obj`` moved along ``direction`` until its nearest vertex is ``gap`` from the body (first contact)."""
    direction = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)
    tree = cKDTree(body)
    low, high = 0.0, 3.0
    distance = lambda s: tree.query(obj + s * direction)[0].min()
    # The first touch: the largest step before any vertex comes within the gap, on a fine grid then bisected.
    steps = np.arange(0.0, high, 0.01)
    hit = next((s for s in steps if distance(s) < gap), None)
    if hit is None:
        raise ValueError("the object never reaches the body along this direction")
    low, high = max(0.0, hit - 0.01), hit
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if distance(middle) >= gap else (low, middle)
    return obj + low * direction


def proximity(a: np.ndarray, b: np.ndarray, radius: float = CONTACT_RADIUS) -> np.ndarray:
    """(len(a),) float32: 1 where a vertex of ``a`` is within ``radius`` of ``b``."""
    return (cKDTree(b).query(a)[0] <= radius).astype(np.float32)


def make_scene(name: str, azimuth: float = 30.0, elevation: float = 10.0, image_size=(256, 256),
               fov: float = 40.0) -> Scene:
    pose_name, object_name, yaw, direction, start = SCENES[name]
    model = load_body("openbody")
    with torch.no_grad():
        world_body = model(body_pose=POSES[pose_name]).vertices[0].numpy().astype(np.float64)
    obj = builtin_object(object_name)
    local = _yawed(obj.vertices.astype(np.float64), yaw)
    anchor = world_body.mean(0) + np.asarray(start)
    world_object = slide_until_touching(world_body, local - local.mean(0) + anchor, direction)
    centre = np.concatenate([world_body, world_object]).mean(0)
    extent = np.linalg.norm(np.ptp(np.concatenate([world_body, world_object]), 0))
    distance = 0.62 * extent / np.tan(np.radians(fov) / 2)
    fov_camera = FoVPerspectiveCamera.look_at(distance, elevation, azimuth, fov=fov, dtype=torch.float64)
    opencv = fov_camera.to_opencv(tuple(image_size))
    to_camera = lambda points: (opencv.R[0].numpy() @ (points - centre).T).T + opencv.t[0].numpy()
    body_cam, object_cam = to_camera(world_body), to_camera(world_object)
    K = opencv.K[0].numpy()
    camera = Intrinsics(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    canonical = canonical_object(obj)
    alignment = umeyama(torch.as_tensor(canonical), torch.as_tensor(object_cam))
    contacts = Contacts(proximity(body_cam, object_cam), model.topology, proximity(object_cam, body_cam), SOURCE, SOURCE)
    body = BodyInput(body_cam, model.faces.numpy(), model.topology, f"synthetic {pose_name} open body")
    return Scene(name, body, object_name, alignment.R.numpy(), alignment.t.numpy(), camera, tuple(image_size), contacts)


def render_mask(scene: Scene, R=None, t=None) -> np.ndarray:
    """(H, W) bool: the object's pixels not hidden by the body, at the scene's pose (or R, t)."""
    from engine.render.rasterizer import rasterize_meshes

    obj = builtin_object(scene.object_name)
    R = scene.R if R is None else R
    t = scene.t if t is None else t
    posed = torch.as_tensor(canonical_object(obj) @ R + t, dtype=torch.float32)
    screen = project(posed, scene.camera)[None]
    fragments = rasterize_meshes(screen, torch.as_tensor(np.array(obj.faces)), scene.image_size)
    body_depth = depth_map(project(torch.as_tensor(scene.body.vertices), scene.camera)[None],
                           torch.as_tensor(np.array(scene.body.faces)), scene.image_size)
    visible = fragments.covered & (fragments.zbuf < body_depth)
    return visible[0].numpy()


def rotation_error_degrees(R_a: np.ndarray, R_b: np.ndarray) -> float:
    cosine = (np.trace(np.asarray(R_a).T @ np.asarray(R_b)) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def perturbation(rng: np.random.Generator, degrees=(20.0, 45.0), metres=(0.15, 0.3)) -> tuple[np.ndarray, np.ndarray]:
    """A random rotation (axis uniform, angle in ``degrees``) and translation (direction uniform, length in ``metres``)."""
    from scipy.spatial.transform import Rotation

    axis = rng.normal(size=3)
    angle = np.radians(rng.uniform(*degrees))
    direction = rng.normal(size=3)
    shift = direction / np.linalg.norm(direction) * rng.uniform(*metres)
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix(), shift
