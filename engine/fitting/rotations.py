"""Rotation representations used by the fitting energies, all differentiable and batched over ``...``.

Two 6D layouts exist in the public code, and both are here under explicit names:

``rotation_6d_to_matrix`` (Zhou et al. 2019, pytorch3d's layout)
    ``d6 = (a1, a2)`` are the first two *rows* of the matrix; Gram-Schmidt gives rows b1, b2 and
    ``b3 = b1 x b2``. Our fitting variables (global orientation) use this layout.
``columns_6d_to_matrix`` (VPoser's decoder, InteractVLM's ``optim/``)
    ``d6.view(3, 2)`` holds the first two *columns* interleaved; Gram-Schmidt gives columns.

Axis-angle vectors follow ``smplx.lbs.batch_rodrigues`` (angle = norm, right-hand rule).
"""
from __future__ import annotations

import torch
from smplx.lbs import batch_rodrigues

_EPS = 1e-8


def _gram_schmidt(a1: torch.Tensor, a2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    return b1, b2, torch.linalg.cross(b1, b2, dim=-1)


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) rows layout to (..., 3, 3) rotation matrices."""
    return torch.stack(_gram_schmidt(d6[..., :3], d6[..., 3:]), dim=-2)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) to (..., 6): the first two rows, the inverse of ``rotation_6d_to_matrix``."""
    return matrix[..., :2, :].reshape(*matrix.shape[:-2], 6)


def columns_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) VPoser layout (``view(3, 2)``: columns interleaved) to (..., 3, 3)."""
    pairs = d6.reshape(*d6.shape[:-1], 3, 2)
    return torch.stack(_gram_schmidt(pairs[..., 0], pairs[..., 1]), dim=-1)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """(..., 3) to (..., 3, 3) through smplx's Rodrigues formula (the one the bodies use)."""
    shape = axis_angle.shape[:-1]
    return batch_rodrigues(axis_angle.reshape(-1, 3)).reshape(*shape, 3, 3)


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) to (..., 4) unit quaternions (w, x, y, z) with w >= 0.

    Each of the four classic formulas is computed and the best-conditioned one (largest denominator)
    is kept per matrix, so the result stays accurate near 180 degrees.
    """
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    four_sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    roots = torch.sqrt(four_sq.clamp_min(_EPS))  # = 2|q_k| for each candidate
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s21, s02, s10 = m[..., 2, 1] + m[..., 1, 2], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1]
    candidates = torch.stack([
        torch.stack([roots[..., 0] ** 2, d21, d02, d10], -1),
        torch.stack([d21, roots[..., 1] ** 2, s10, s02], -1),
        torch.stack([d02, s10, roots[..., 2] ** 2, s21], -1),
        torch.stack([d10, s02, s21, roots[..., 3] ** 2], -1),
    ], -2) / (2 * roots[..., None])
    best = four_sq.argmax(-1)
    quaternion = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    quaternion = torch.nn.functional.normalize(quaternion, dim=-1)
    return torch.where(quaternion[..., :1] < 0, -quaternion, quaternion)


def quaternion_to_axis_angle(quaternion: torch.Tensor) -> torch.Tensor:
    """(..., 4) (w, x, y, z) to (..., 3); small angles use the series 2/w so gradients stay finite."""
    vector, w = quaternion[..., 1:], quaternion[..., :1]
    sin_half = vector.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, w)
    small = sin_half < 1e-4
    factor = torch.where(small, 2 / w.clamp_min(_EPS) - sin_half ** 2 * 2 / (3 * w.clamp_min(_EPS) ** 3),
                         angle / torch.where(small, torch.ones_like(sin_half), sin_half))
    return vector * factor


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) to (..., 3) axis-angle with angles in [0, pi]."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def rotation_about_y(angle: float | torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """(3, 3) rotation by ``angle`` radians about the world up axis (+Y)."""
    angle = torch.as_tensor(angle, dtype=dtype)
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([torch.stack([c, zero, s]), torch.stack([zero, one, zero]), torch.stack([-s, zero, c])])
