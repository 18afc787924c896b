"""Rigid geometry of the object fit: the release's 6D rotation layout, Umeyama alignment and contact ICP.

Conventions (REFERENCE.md section 1, "HOI fitting"):
- Poses act on row vectors: ``x' = s * (x @ R) + t``.
- The 6D rotation is the interleaved layout of InteractVLM's ``optim/``: six numbers viewed as (3, 2),
  whose columns a1, a2 go through Gram-Schmidt to the columns b1, b2, b3 = b1 x b2 of ``R``. This is not
  pytorch3d's 6D layout (rows); the identity reads the same in both.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import InputError


def rotation_6d_to_matrix(six: torch.Tensor) -> torch.Tensor:
    """(..., 6) interleaved 6D -> (..., 3, 3) rotation with the Gram-Schmidt columns."""
    pairs = six.reshape(*six.shape[:-1], 3, 2)
    b1 = torch.nn.functional.normalize(pairs[..., 0], dim=-1)
    a2 = pairs[..., 1]
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation -> (..., 6): its first two columns, interleaved (the inverse of the above)."""
    return matrix[..., :, :2].reshape(*matrix.shape[:-2], 6)


def apply_pose(points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor, scale=1.0) -> torch.Tensor:
    """Row-vector pose: ``scale * (points @ rotation) + translation``; points (P, 3)."""
    return scale * (points @ rotation) + translation


@dataclass(frozen=True)
class Alignment:
    """The rigid map of ``umeyama``: ``target ~ source @ R + t``. R (3, 3), t (3,), rmse in source units."""

    R: torch.Tensor
    t: torch.Tensor
    rmse: float


def umeyama(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> Alignment:
    """Least-squares rotation and translation (no scale) taking row points ``source`` (P, 3) onto ``target``.

    Umeyama (1991): with centred points and the weighted cross-covariance ``S = X^T diag(w) Y``,
    ``S = U D V^T`` and ``R = U diag(1, 1, det(U V^T)) V^T`` (the reflection fix), ``t = mu_y - mu_x R``.
    """
    if source.shape != target.shape or source.dim() != 2 or source.shape[1] != 3:
        raise InputError(f"point sets must both have shape (P, 3), got {tuple(source.shape)} and {tuple(target.shape)}")
    if source.shape[0] < 3:
        raise InputError(f"a rigid alignment needs at least 3 corresponding points, got {source.shape[0]}")
    w = torch.ones(len(source), dtype=source.dtype, device=source.device) if weights is None else weights.to(source)
    w = w / w.sum()
    mu_x, mu_y = (w[:, None] * source).sum(0), (w[:, None] * target).sum(0)
    x, y = source - mu_x, target - mu_y
    covariance = x.T @ (w[:, None] * y)
    u, _, vh = torch.linalg.svd(covariance)
    fix = torch.ones(3, dtype=source.dtype, device=source.device)
    fix[2] = torch.sign(torch.linalg.det(u @ vh))
    fix[2] = torch.where(fix[2] == 0, torch.ones_like(fix[2]), fix[2])
    rotation = u @ torch.diag(fix) @ vh
    translation = mu_y - mu_x @ rotation
    residual = source @ rotation + translation - target
    return Alignment(rotation, translation, float(torch.sqrt((w * (residual ** 2).sum(-1)).sum())))


@dataclass(frozen=True)
class IcpResult:
    """The object's pose after ICP: ``R`` (3, 3) and ``t`` (3,) composed with the starting pose;
    ``iterations`` run; ``rmse`` per iteration (xyz distance of the matched pairs, before each update)."""

    R: torch.Tensor
    t: torch.Tensor
    iterations: int
    rmse: tuple[float, ...]
    converged: bool


def nearest_in_features(query: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Index (Q,) of each query row's nearest reference row (Euclidean in whatever feature space)."""
    return torch.cdist(query, reference).argmin(1)


def contact_icp(object_points: torch.Tensor, object_normals: torch.Tensor, human_points: torch.Tensor,
                human_normals: torch.Tensor, R: torch.Tensor, t: torch.Tensor, *, max_iterations: int = 10,
                relative_tolerance: float = 1e-6) -> IcpResult:
    """Snap object contact points onto human contact points (paper section 5, REFERENCE "Initialisation" 2).

    Each iteration (at most ``max_iterations``): pose the object's contact points and normals with the
    current (R, t); match each to its nearest human contact point in the 6D space ``(xyz, normal)`` with the
    human normals negated (contacting surfaces face each other); solve Umeyama without scale from the
    *original* object points to the matches, so the pose is re-estimated from scratch. Stops early when the
    matched rmse + (1 - mean normal cosine) changes by less than ``relative_tolerance`` relative.
    Returns the scored pose with the lowest of that energy (the start included): with many-to-one matches
    on flat contact patches the iterates can drift, and the initialisation must never get worse by ICP's
    own measure. The release finds the correspondences once (a single Umeyama step); we iterate as described.
    """
    if len(object_points) < 3 or len(human_points) < 1:
        raise InputError(f"ICP needs at least 3 object contact points and 1 human contact point, got "
                         f"{len(object_points)} and {len(human_points)}")
    target_features = torch.cat([human_points, -human_normals], 1)
    history: list[float] = []
    best = (float("inf"), R, t)
    previous = None
    converged = False
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        posed, posed_normals = object_points @ R + t, object_normals @ R
        match = nearest_in_features(torch.cat([posed, posed_normals], 1), target_features)
        rmse = float(((posed - human_points[match]) ** 2).sum(-1).mean().sqrt())
        cosine = float((posed_normals * -human_normals[match]).sum(-1).mean())
        history.append(rmse)
        energy = rmse + (1 - cosine)
        if energy < best[0]:
            best = (energy, R, t)
        if previous is not None and abs(previous - energy) <= relative_tolerance * max(abs(previous), 1e-12):
            converged = True
            break
        previous = energy
        alignment = umeyama(object_points, human_points[match])
        R, t = alignment.R, alignment.t
    if not converged:  # the pose after the last update has not been scored yet
        posed, posed_normals = object_points @ R + t, object_normals @ R
        match = nearest_in_features(torch.cat([posed, posed_normals], 1), target_features)
        energy = float(((posed - human_points[match]) ** 2).sum(-1).mean().sqrt()) + \
            1 - float((posed_normals * -human_normals[match]).sum(-1).mean())
        if energy < best[0]:
            best = (energy, R, t)
    _, R, t = best
    return IcpResult(R, t, iterations, tuple(history), converged)
