"""GenZI's multi-view cameras: Fibonacci candidates, patch visibility, view selection, shaded renders.

Candidates (GenZI misc.py ``generate_viewpoints``, in our Y-up world)
    256 unit directions on a Fibonacci sphere with its pole on Y (``fibonacci_directions``). A direction
    is kept when its angle to up is strictly between 60 and 90 degrees (elevation strictly between 0
    and 30 degrees) and its angle to the surface normal at the point is below 135 degrees. The camera
    sits at ``point + 2 * direction``, looks at the point with up = +Y, vertical FoV 60, 512 x 512.

Visibility
    Faces reaching within 0.15 m of the point are split until their edges are at most 5 cm (GenZI
    takes a subdivided copy of the whole scene, ``subd_mesh``). The target patch is the connected set
    of faces (adjacency through shared vertices) that touch a vertex within 0.15 m of the point, grown
    from the face under the point. A view's ratio is the area of the
    patch faces that are rasterized somewhere in the image and face the camera
    (``(eye - centroid) . normal > 0``), over the patch's area. Rasterization is ours
    (``engine.render``), with patch faces drawn like every other face.

Selection
    Views with ratio > 0.4 pass; the 16 best are kept. Where ratios tie (within 1e-9), the view that
    is angularly farthest from the views already chosen goes first, so ties spread around the point
    instead of bunching on one side (the release's argsort order). When no view passes, an
    ``InputError`` names a nearby point that does pass, if one exists within 1 m.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import trimesh
from scipy.sparse.csgraph import connected_components

from engine.errors import InputError
from engine.genzi.scenes import Scene, ScenePoint, check_point, closest_surface_point
from engine.mesh import vertex_normals
from engine.render.cameras import FoVPerspectiveCamera, look_at_view_transform
from engine.render.rasterizer import rasterize_meshes
from engine.render.shading import PhongMaterial, phong_shade

NUM_DIRECTIONS = 256
MIN_ELEVATION, MAX_ELEVATION = 0.0, 30.0  # degrees, both exclusive
MAX_NORMAL_ANGLE = 135.0  # degrees, exclusive
VIEW_DISTANCE = 2.0
FOV = 60.0
IMAGE_SIZE = 512
PATCH_RADIUS = 0.15
MIN_VISIBLE_RATIO = 0.4  # exclusive
MAX_VIEWS = 16
TIE_TOLERANCE = 1e-9
SUGGESTION_RADIUS = 1.0
SUGGESTION_TRIES = 8
SUGGESTION_IMAGE_SIZE = 128
MAX_REFINEMENTS = 10
PATCH_EDGE_FRACTION = 1 / 3  # patch faces are split until their edges are at most a third of the radius


@dataclass(frozen=True)
class ViewConfig:
    """Every constant of the camera search (GenZI's values by default)."""

    num_directions: int = NUM_DIRECTIONS
    min_elevation: float = MIN_ELEVATION
    max_elevation: float = MAX_ELEVATION
    max_normal_angle: float = MAX_NORMAL_ANGLE
    distance: float = VIEW_DISTANCE
    fov: float = FOV
    image_size: int = IMAGE_SIZE
    patch_radius: float = PATCH_RADIUS
    min_ratio: float = MIN_VISIBLE_RATIO
    max_views: int = MAX_VIEWS


@dataclass(frozen=True)
class ViewSelection:
    """The chosen cameras, best first.

    point: the checked point.  directions: (K, 3) unit directions from the point to each eye.
    eyes: (K, 3).  ratios: (K,) visible patch ratio of each view.  cameras: K FoV cameras (pytorch3d
    convention, ``engine.render.cameras``).  patch_triangles: (P, 3, 3) corners of the target patch's
    faces (on the refined scene).
    candidates: (C, 3) every direction that passed the angle filters, and candidate_ratios (C,).
    """

    point: ScenePoint
    directions: np.ndarray
    eyes: np.ndarray
    ratios: np.ndarray
    cameras: FoVPerspectiveCamera
    patch_triangles: np.ndarray
    candidates: np.ndarray
    candidate_ratios: np.ndarray
    image_size: int


def fibonacci_directions(count: int = NUM_DIRECTIONS) -> np.ndarray:
    """(count, 3) unit vectors of GenZI's Fibonacci sphere: y runs from +1 to -1, golden-angle turns in x-z."""
    if count < 2:
        raise InputError(f"the Fibonacci sphere needs at least 2 directions, got {count}")
    index = np.arange(count)
    y = 1.0 - 2.0 * index / (count - 1)
    radius = np.sqrt(np.clip(1.0 - y * y, 0.0, None))
    theta = math.pi * (math.sqrt(5.0) - 1.0) * index
    return np.stack([np.cos(theta) * radius, y, np.sin(theta) * radius], axis=1)


def _angles_deg(directions: np.ndarray, axis: np.ndarray) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    return np.degrees(np.arccos(np.clip(directions @ axis, -1.0, 1.0)))


def candidate_directions(normal, config: ViewConfig = ViewConfig()) -> np.ndarray:
    """Directions with elevation strictly inside the band and within ``max_normal_angle`` of ``normal``."""
    directions = fibonacci_directions(config.num_directions)
    to_up = _angles_deg(directions, np.array([0.0, 1.0, 0.0]))
    band = (to_up > 90.0 - config.max_elevation) & (to_up < 90.0 - config.min_elevation)
    facing = _angles_deg(directions, normal) < config.max_normal_angle
    return directions[band & facing]


def cameras_at(point, directions: np.ndarray, config: ViewConfig = ViewConfig()) -> FoVPerspectiveCamera:
    """Cameras at ``point + distance * direction`` looking at the point, up +Y."""
    directions = np.asarray(directions, dtype=np.float64)
    elevation = np.degrees(np.arcsin(np.clip(directions[:, 1], -1.0, 1.0)))
    azimuth = np.degrees(np.arctan2(directions[:, 0], directions[:, 2]))
    rotation, translation = look_at_view_transform(config.distance, elevation, azimuth,
                                                   at=tuple(float(v) for v in point))
    return FoVPerspectiveCamera(rotation, translation, fov=config.fov)


def refine_near(scene: Scene, centre, radius: float, max_edge: float) -> Scene:
    """The scene with every face that reaches within ``radius`` of ``centre`` split (1 to 4, repeatedly)
    until its edges are at most ``max_edge``: GenZI's subdivided copy of the scene, made on demand and
    only where the patch is, so that a coarse mesh still has vertices within the patch radius."""
    vertices, faces = scene.vertices, scene.faces
    for _ in range(MAX_REFINEMENTS):
        corners = vertices[faces]
        centroids = corners.mean(axis=1)
        reach = np.linalg.norm(corners - centroids[:, None], axis=2).max(axis=1)
        near = np.linalg.norm(centroids - centre, axis=1) - reach <= radius
        edges = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2).max(axis=1)
        split = np.flatnonzero(near & (edges > max_edge))
        if split.size == 0:
            break
        vertices, faces = trimesh.remesh.subdivide(vertices, faces, face_index=split)
    return Scene(scene.name, vertices, faces, scene.up_axis)


def target_patch(scene: Scene, point: ScenePoint, radius: float = PATCH_RADIUS) -> np.ndarray:
    """Face ids of the patch: faces touching a vertex within ``radius``, connected to the face under the point."""
    near = np.linalg.norm(scene.vertices - point.nearest, axis=1) < radius
    touching = near[scene.faces].any(axis=1)
    touching[point.face] = True
    faces = np.flatnonzero(touching)
    # Faces are adjacent when they share a vertex: a face-by-vertex incidence matrix times its transpose.
    incidence = sp.csr_matrix((np.ones(faces.size * 3), (np.repeat(np.arange(faces.size), 3), scene.faces[faces].ravel())),
                              shape=(faces.size, len(scene.vertices)))
    _, labels = connected_components(incidence @ incidence.T, directed=False)
    return faces[labels == labels[np.searchsorted(faces, point.face)]]


def visible_ratios(scene: Scene, patch_faces: np.ndarray, cameras: FoVPerspectiveCamera, image_size: int,
                   batch: int = 8) -> np.ndarray:
    """(N,) area fraction of the patch that is rasterized and front-facing in each camera.

    Only the window of the image that the patch's bounding box covers is rasterized (pixel centres and
    depths are those of the full image shifted by the window's corner), which is exact: no patch face
    can be seen outside it.
    """
    vertices = torch.from_numpy(scene.vertices.copy()).float()
    faces = torch.from_numpy(scene.faces.copy())
    in_patch = np.zeros(len(scene.faces), dtype=bool)
    in_patch[patch_faces] = True
    patch_vertices = torch.from_numpy(np.unique(scene.faces[patch_faces]))
    total = float(scene.face_areas[patch_faces].sum())
    eyes = cameras.camera_centres().double().numpy()
    ratios = []
    for start in range(0, len(cameras), batch):
        chunk = FoVPerspectiveCamera(cameras.R[start:start + batch], cameras.T[start:start + batch], cameras.fov)
        screen = chunk.transform_points_screen(vertices, (image_size, image_size))
        window = screen[:, patch_vertices, :2]
        low = torch.floor(window.amin((0, 1))).clamp(0, image_size - 1)
        high = torch.ceil(window.amax((0, 1))).clamp(0, image_size - 1)
        shifted = screen - torch.tensor([float(low[0]), float(low[1]), 0.0])
        size = (int(high[1] - low[1]) + 1, int(high[0] - low[0]) + 1)
        pix_to_face = rasterize_meshes(shifted, faces, size).pix_to_face.numpy()
        for offset, image in enumerate(pix_to_face):
            seen = np.unique(image[image >= 0])
            seen = seen[in_patch[seen]]
            to_eye = eyes[start + offset] - scene.vertices[scene.faces[seen]].mean(axis=1)
            front = (to_eye * scene.face_normals[seen]).sum(1) > 0
            ratios.append(float(scene.face_areas[seen[front]].sum()) / total if total > 0 else 0.0)
    return np.asarray(ratios)


def rank_views(ratios: np.ndarray, directions: np.ndarray, min_ratio: float, max_views: int) -> np.ndarray:
    """Indices of at most ``max_views`` passing views, best ratio first, ties broken by angular spread."""
    remaining = [int(i) for i in np.flatnonzero(ratios > min_ratio)]
    chosen: list[int] = []
    while remaining and len(chosen) < max_views:
        best = max(ratios[i] for i in remaining)
        tied = [i for i in remaining if ratios[i] >= best - TIE_TOLERANCE]
        if chosen and len(tied) > 1:
            spread = [np.min(np.arccos(np.clip(directions[chosen] @ directions[i], -1, 1))) for i in tied]
            pick = tied[int(np.argmax(spread))]  # argmax keeps the lowest index among equal spreads
        else:
            pick = tied[0]
        chosen.append(pick)
        remaining.remove(pick)
    return np.asarray(chosen, dtype=np.int64)


def _ratios_at(scene: Scene, point: ScenePoint, config: ViewConfig, image_size: int):
    directions = candidate_directions(point.normal, config)
    if len(directions) == 0:
        return directions, np.zeros(0), None, np.zeros((0, 3, 3))
    cameras = cameras_at(point.nearest, directions, config)
    refined = refine_near(scene, point.nearest, config.patch_radius, config.patch_radius * PATCH_EDGE_FRACTION)
    patch = target_patch(refined, closest_surface_point(refined, point.nearest), config.patch_radius)
    return directions, visible_ratios(refined, patch, cameras, image_size), cameras, refined.vertices[refined.faces[patch]]


def select_views(scene: Scene, point, config: ViewConfig = ViewConfig()) -> ViewSelection:
    """Check the point, filter the 256 directions, measure patch visibility and keep the best views.

    Cameras look at the surface point closest to the given one. Raises ``InputError`` when no view
    passes, naming a nearby point that does.
    """
    checked = point if isinstance(point, ScenePoint) else check_point(scene, point)
    directions, ratios, cameras, patch = _ratios_at(scene, checked, config, config.image_size)
    order = rank_views(ratios, directions, config.min_ratio, config.max_views) if len(ratios) else np.zeros(0, int)
    if len(order) == 0:
        raise InputError(_no_view_message(scene, checked, config))
    chosen = FoVPerspectiveCamera(cameras.R[torch.from_numpy(order)], cameras.T[torch.from_numpy(order)], config.fov)
    return ViewSelection(checked, directions[order], checked.nearest + config.distance * directions[order],
                         ratios[order], chosen, patch, directions, ratios, config.image_size)


def suggest_point(scene: Scene, point: ScenePoint, config: ViewConfig = ViewConfig()) -> np.ndarray | None:
    """A surface point within ``SUGGESTION_RADIUS`` from which some view passes, nearest first, or None."""
    centroids = scene.vertices[scene.faces].mean(axis=1)
    distance = np.linalg.norm(centroids - point.nearest, axis=1)
    tried: list[np.ndarray] = []
    for face in np.argsort(distance):
        if distance[face] > SUGGESTION_RADIUS or len(tried) >= SUGGESTION_TRIES:
            break
        if distance[face] < config.patch_radius or any(np.linalg.norm(centroids[face] - t) < config.patch_radius for t in tried):
            continue
        tried.append(centroids[face])
        candidate = ScenePoint(centroids[face], centroids[face], 0.0, scene.face_normals[face], int(face))
        _, ratios, _, _ = _ratios_at(scene, candidate, config, SUGGESTION_IMAGE_SIZE)
        if (ratios > config.min_ratio).any():
            return centroids[face]
    return None


def _no_view_message(scene: Scene, point: ScenePoint, config: ViewConfig) -> str:
    where = ", ".join(f"{v:.2f}" for v in point.nearest)
    message = (f"no camera sees enough of the surface around the point ({where}): from every direction "
               f"{config.min_elevation:g}-{config.max_elevation:g} degrees above the horizon at {config.distance:g} m, "
               f"at most {config.min_ratio:.0%} of the {config.patch_radius:g} m patch is visible")
    suggestion = suggest_point(scene, point, config)
    if suggestion is None:
        return message + "; pick a point on an open, upward-facing surface"
    return message + "; try the point " + ", ".join(f"{v:.2f}" for v in suggestion)


def render_views(scene: Scene, cameras: FoVPerspectiveCamera, image_size: int = IMAGE_SIZE,
                 colour=(0.75, 0.75, 0.75), device=None) -> np.ndarray:
    """(N, H, W, 3) uint8 Phong renders of the grey scene for the inpainting model, lit from each camera
    and from above; background white. ``device``: where to rasterize (CPU by default)."""
    vertices = torch.from_numpy(scene.vertices.copy()).float().to(device)
    faces = torch.from_numpy(scene.faces.copy()).to(device)
    cameras = cameras.to(device)
    normals = vertex_normals(vertices, faces)
    colours = torch.tensor(colour, device=vertices.device).expand_as(vertices)
    images = []
    eyes = cameras.camera_centres()
    material = PhongMaterial(ambient=0.35, diffuse=0.55, specular=0.1)
    for index in range(len(cameras)):
        camera = FoVPerspectiveCamera(cameras.R[index:index + 1], cameras.T[index:index + 1], cameras.fov)
        screen = camera.transform_points_screen(vertices, (image_size, image_size))
        fragments = rasterize_meshes(screen, faces, (image_size, image_size))
        eye = eyes[index]
        lights = (tuple(eye.tolist()), (float(eye[0]), float(eye[1]) + 3.0, float(eye[2])))
        image = phong_shade(fragments, faces, vertices, normals, colours, eyes[index:index + 1], lights=lights,
                            material=material)
        images.append((image[0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
    return np.stack(images)
