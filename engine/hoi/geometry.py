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


def match_contacts(posed: torch.Tensor, posed_normals: torch.Tensor, human_points: torch.Tensor,
                   human_normals: torch.Tensor, *, reject_factor: float = 2.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust correspondences for one ICP iteration: (object index (M,), human index (M,)).

    Each posed object point's nearest human point in ``(xyz, normal)`` with the human normals negated;
    then rejected: pairs whose normals disagree (the object's normal and the negated human normal at more
    than 90 degrees), pairs farther than ``reject_factor`` x the median xyz distance, and all but the
    nearest object point per human point (one-to-one, so a whole patch cannot collapse onto one point of
    the other patch's boundary).
    """
    features = torch.cat([posed, posed_normals], 1)
    match = nearest_in_features(features, torch.cat([human_points, -human_normals], 1))
    distance = (posed - human_points[match]).norm(dim=-1)
    keep = (posed_normals * -human_normals[match]).sum(-1) > 0
    if keep.any():
        keep &= distance <= reject_factor * distance[keep].median() + 1e-12
    objects = torch.nonzero(keep).squeeze(1)
    order = objects[torch.argsort(distance[objects])]  # nearest first: the first per human point is kept
    humans = match[order]
    first = torch.ones_like(humans, dtype=torch.bool)
    if len(humans) > 1:
        sorted_humans, position = torch.sort(humans, stable=True)
        repeat = torch.zeros_like(first)
        repeat[1:] = sorted_humans[1:] == sorted_humans[:-1]
        first[position] = ~repeat
    return order[first], humans[first]


def contact_icp(object_points: torch.Tensor, object_normals: torch.Tensor, human_points: torch.Tensor,
                human_normals: torch.Tensor, R: torch.Tensor, t: torch.Tensor, *, max_iterations: int = 10,
                relative_tolerance: float = 1e-6, reject_factor: float = 2.5) -> IcpResult:
    """Snap object contact points onto human contact points (paper section 5, REFERENCE "Initialisation" 2).

    First the contact patches' centroids are aligned (a translation: from an offset start, nearest
    neighbours would otherwise all fall on the near boundary of the human patch and tilt the object).
    Then each iteration (at most ``max_iterations``): pose the object's contact points and normals with
    the current (R, t); match them with ``match_contacts`` (nearest neighbours in ``(xyz, normal)``, human
    normals negated, with rejection and one-to-one matches); score the matched rmse; solve Umeyama without
    scale from the *original* object points to their matches. Stops when the rmse stops improving (by
    less than ``relative_tolerance`` relative) or fewer than 3 pairs survive; returns the lowest-rmse pose.
    The release finds the correspondences once (a single Umeyama step); we iterate as described.
    """
    if len(object_points) < 3 or len(human_points) < 1:
        raise InputError(f"ICP needs at least 3 object contact points and 1 human contact point, got "
                         f"{len(object_points)} and {len(human_points)}")
    t = t + human_points.mean(0) - (object_points @ R + t).mean(0)
    history: list[float] = []
    best = (float("inf"), R, t)
    converged = False
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        posed, posed_normals = object_points @ R + t, object_normals @ R
        objects, humans = match_contacts(posed, posed_normals, human_points, human_normals, reject_factor=reject_factor)
        if len(objects) < 3:
            converged = True
            break
        rmse = float(((posed[objects] - human_points[humans]) ** 2).sum(-1).mean().sqrt())
        history.append(rmse)
        if rmse >= best[0] * (1 - relative_tolerance):
            converged = True
            break
        best = (rmse, R, t)
        alignment = umeyama(object_points[objects], human_points[humans])
        R, t = alignment.R, alignment.t
    if not converged:  # the pose after the last update has not been scored yet
        posed, posed_normals = object_points @ R + t, object_normals @ R
        objects, humans = match_contacts(posed, posed_normals, human_points, human_normals, reject_factor=reject_factor)
        if len(objects) >= 3:
            rmse = float(((posed[objects] - human_points[humans]) ** 2).sum(-1).mean().sqrt())
            if rmse < best[0]:
                best = (rmse, R, t)
    _, R, t = best
    return IcpResult(R, t, iterations, tuple(history), converged)
