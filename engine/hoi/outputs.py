"""What a fit hands back as files: OBJ meshes, a GLB with the contacts coloured, the fit drawn over the
image, an animated GIF of the optimisation, and the result npz.

The result npz (``fit_npz``) holds, with plain ``np.load`` (no pickles):
    method        () str    "interactvlm contacts" or "silhouette only (no contacts)"
    R (3, 3), t (3,), s ()  the object pose: x_cam = s * (object_canonical @ R) + t (row vectors, OpenCV camera frame)
    object_canonical (Vo, 3), object_faces (Fo, 3), object_vertices (Vo, 3)
    human_vertices (Vh, 3), human_faces (Fh, 3), human_topology () str
    human_centroid (3,)     the body's area-weighted centroid; t - human_centroid is the release's translation
                            (its frame is centred on the human)
    K (3, 3), image_size (2,) [H, W], render_size (2,)
    init_R (3, 3), init_t (3,), icp_rmse (k,)
    loss_total, loss_mask, loss_centroid[, loss_contact] (iterations,)
    iou ()  hard IoU with the mask at the render size
    sources_json () UTF-8 JSON bytes {input: source}; stage_seconds_json likewise
"""
from __future__ import annotations

import io
import json

import numpy as np
import torch
import trimesh
from PIL import Image

from engine.hoi.fit import HoiFit
from engine.hoi.inputs import project
from engine.mesh import vertex_normals
from engine.render.rasterizer import rasterize_meshes
from engine.render.shading import phong_shade

HUMAN_COLOUR = (0.05, 0.66, 0.96)  # the release's overlay colours
OBJECT_COLOUR = (1.0, 0.9, 0.3)
CONTACT_COLOUR = (0.9, 0.1, 0.1)


def obj_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    return trimesh.Trimesh(np.asarray(vertices), np.asarray(faces), process=False).export(file_type="obj").encode()


def combined_mesh(fit: HoiFit) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.concatenate([fit.human_vertices, fit.object_vertices])
    faces = np.concatenate([fit.human_faces, fit.object_faces + len(fit.human_vertices)])
    return vertices, faces


def obj_files(fit: HoiFit) -> dict[str, bytes]:
    """{"combined.obj", "human.obj", "object.obj"}: the release's final.obj / final_human.obj / final_object.obj."""
    return {"combined.obj": obj_bytes(*combined_mesh(fit)), "human.obj": obj_bytes(fit.human_vertices, fit.human_faces),
            "object.obj": obj_bytes(fit.object_vertices, fit.object_faces)}


def _coloured(base, values) -> np.ndarray:
    weight = np.clip(np.asarray(values, dtype=np.float64), 0, 1)[:, None] if values is not None else 0.0
    return np.asarray(base) * (1 - weight) + np.asarray(CONTACT_COLOUR) * weight


def glb_bytes(fit: HoiFit, human_contacts=None, object_contacts=None) -> bytes:
    """Body and object in one GLB, contacts blended to red; flipped to Y-up so viewers show it upright."""
    flip = np.diag([1.0, -1.0, -1.0])
    scene = trimesh.Scene()
    for name, vertices, faces, colour, values in (
            ("human", fit.human_vertices, fit.human_faces, HUMAN_COLOUR, human_contacts),
            ("object", fit.object_vertices, fit.object_faces, OBJECT_COLOUR, object_contacts)):
        rgb = _coloured(np.tile(colour, (len(vertices), 1)), values)
        rgba = np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], 1).astype(np.uint8)
        scene.add_geometry(trimesh.Trimesh(vertices @ flip, faces, vertex_colors=rgba, process=False), node_name=name)
    return scene.export(file_type="glb")


def human_centroid(fit: HoiFit) -> np.ndarray:
    """The body's area-weighted surface centroid (trimesh's ``center_mass`` of the surface, as the release uses)."""
    corners = fit.human_vertices[fit.human_faces]
    areas = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1) / 2
    return (areas[:, None] * corners.mean(1)).sum(0) / areas.sum()


def fit_npz(fit: HoiFit) -> bytes:
    arrays = {"method": np.array(fit.method), "R": fit.R, "t": fit.t, "s": np.array(fit.s),
              "object_canonical": fit.object_canonical, "object_faces": fit.object_faces,
              "object_vertices": fit.object_vertices, "human_vertices": fit.human_vertices,
              "human_faces": fit.human_faces, "human_topology": np.array(fit.human_topology),
              "human_centroid": human_centroid(fit), "K": fit.camera.K, "image_size": np.array(fit.image_size),
              "render_size": np.array(fit.render_size), "init_R": fit.init_R, "init_t": fit.init_t,
              "icp_rmse": np.array(fit.icp_rmse, dtype=np.float64), "iou": np.array(fit.iou),
              "sources_json": np.frombuffer(json.dumps(dict(fit.sources)).encode(), dtype=np.uint8),
              "stage_seconds_json": np.frombuffer(json.dumps(dict(fit.stage_seconds)).encode(), dtype=np.uint8)}
    arrays.update({f"loss_{name}": values for name, values in fit.losses.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def overlay(image: np.ndarray, fit: HoiFit, object_vertices: np.ndarray | None = None, alpha: float = 0.7) -> np.ndarray:
    """(H, W, 3) uint8: the body (blue) and the object (yellow), Phong-shaded, over the image."""
    image = np.asarray(image, dtype=np.float32) / 255.0
    obj = fit.object_vertices if object_vertices is None else object_vertices
    vertices = torch.as_tensor(np.concatenate([fit.human_vertices, obj]), dtype=torch.float32)
    faces = torch.as_tensor(np.concatenate([fit.human_faces, fit.object_faces + len(fit.human_vertices)]))
    colours = torch.as_tensor(np.concatenate([np.tile(HUMAN_COLOUR, (len(fit.human_vertices), 1)),
                                              np.tile(OBJECT_COLOUR, (len(obj), 1))]), dtype=torch.float32)
    screen = project(vertices, fit.camera)[None]
    fragments = rasterize_meshes(screen, faces, fit.image_size)
    # Shade in the camera frame: the camera sits at the origin, lights beside it.
    shaded = phong_shade(fragments, faces, vertices, vertex_normals(vertices, faces), colours,
                         torch.zeros(1, 3), lights=((0.0, -1.0, -1.0), (1.0, 0.0, -2.0)))[0].numpy()
    covered = fragments.covered[0].numpy()[..., None]
    out = np.where(covered, alpha * shaded + (1 - alpha) * image, image)
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def animation_gif(image: np.ndarray, fit: HoiFit, max_side: int = 320, duration_ms: int = 120) -> bytes:
    """An animated GIF of the object's poses along the optimisation, drawn over the image (downscaled)."""
    frames = [Image.fromarray(overlay(image, fit, vertices)) for vertices in fit.frames]
    factor = min(1.0, max_side / max(fit.image_size))
    if factor < 1.0:
        size = (max(1, round(fit.image_size[1] * factor)), max(1, round(fit.image_size[0] * factor)))
        frames = [frame.resize(size, Image.Resampling.BILINEAR) for frame in frames]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return buffer.getvalue()
