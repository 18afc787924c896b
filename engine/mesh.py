"""Validation and small differential-geometry helpers shared by bodies, renderer and lifting."""
from __future__ import annotations

import numpy as np
import torch

from engine.errors import InputError

MAX_VERTICES = 2_000_000
MAX_FACES = 4_000_000


def as_vertices(vertices, *, name: str = "vertices", batched: bool = False) -> torch.Tensor:
    """Return a float tensor of shape (V, 3) or (N, V, 3); refuse NaN/inf, empty and wrong shapes."""
    tensor = torch.as_tensor(vertices)
    if not tensor.is_floating_point():
        tensor = tensor.float()
    expected_dims = 3 if batched else 2
    if tensor.dim() != expected_dims or tensor.shape[-1] != 3:
        shape = "(N, V, 3)" if batched else "(V, 3)"
        raise InputError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    if tensor.shape[-2] == 0:
        raise InputError(f"{name} is empty: a mesh needs at least one triangle")
    if tensor.shape[-2] > MAX_VERTICES:
        raise InputError(f"{name} has {tensor.shape[-2]} vertices; at most {MAX_VERTICES} are accepted")
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).any(-1).sum())
        raise InputError(f"{name} contains NaN or inf in {bad} vertices; every coordinate must be finite")
    return tensor


def as_faces(faces, num_vertices: int, *, name: str = "faces") -> torch.Tensor:
    """Return int64 faces (F, 3) whose ids are all in [0, num_vertices)."""
    tensor = torch.as_tensor(np.asarray(faces) if not torch.is_tensor(faces) else faces)
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise InputError(f"{name} must hold integer vertex ids, got {tensor.dtype}")
    if tensor.dim() != 2 or tensor.shape[1] != 3:
        raise InputError(f"{name} must have shape (F, 3), got {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise InputError(f"{name} is empty: a mesh needs at least one triangle")
    if tensor.shape[0] > MAX_FACES:
        raise InputError(f"{name} has {tensor.shape[0]} faces; at most {MAX_FACES} are accepted")
    low, high = int(tensor.min()), int(tensor.max())
    if low < 0 or high >= num_vertices:
        raise InputError(
            f"{name} refer to vertex ids in [{low}, {high}] but the mesh has {num_vertices} vertices "
            f"(valid ids are 0..{num_vertices - 1})"
        )
    return tensor.long()


def validate_mesh(vertices, faces) -> tuple[torch.Tensor, torch.Tensor]:
    """Both checks at once: finite (V, 3) vertices and in-range (F, 3) faces."""
    verts = as_vertices(vertices)
    return verts, as_faces(faces, verts.shape[0]).to(verts.device)


def face_normals(vertices: torch.Tensor, faces: torch.Tensor, *, unit: bool = True) -> torch.Tensor:
    """(..., F, 3) normals of counter-clockwise faces; area-weighted when ``unit`` is False."""
    corners = vertices[..., faces, :]
    normals = torch.cross(corners[..., 1, :] - corners[..., 0, :], corners[..., 2, :] - corners[..., 0, :], dim=-1)
    return torch.nn.functional.normalize(normals, dim=-1) if unit else normals


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(..., V, 3) unit normals: area-weighted sum of the incident face normals."""
    weighted = face_normals(vertices, faces, unit=False)
    normals = torch.zeros_like(vertices)
    for corner in range(3):
        normals.index_add_(-2, faces[:, corner], weighted)
    return torch.nn.functional.normalize(normals, dim=-1)


def unique_edges(faces: np.ndarray) -> np.ndarray:
    """(E, 2) sorted vertex pairs, each undirected edge once."""
    faces = np.asarray(faces)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(edges, axis=1), axis=0)
