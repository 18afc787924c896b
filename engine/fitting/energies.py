"""Energy terms of body fitting: pure functions of tensors (SMPLify style), no state.

Each returns a scalar tensor. ``engine.fitting.fit`` weighs them per stage; GenZI and HOI add
their own terms next to these (see ``fit.ExtraTerm``).

Conventions: pixels are OpenCV (column, row), cameras are ``engine.render.cameras.OpenCVCamera``
(read that module's docstring), poses are axis-angle per joint, flattened (B, J * 3).
"""
from __future__ import annotations

import torch

from engine.render.cameras import OpenCVCamera


def gmof(residual: torch.Tensor, rho: float) -> torch.Tensor:
    """Geman-McClure robust penalty ``rho^2 r^2 / (r^2 + rho^2)``, elementwise.

    Quadratic (r^2) for |r| << rho, saturating at rho^2 for outliers.
    """
    squared = residual ** 2
    return rho ** 2 * squared / (squared + rho ** 2)


def project_points(camera: OpenCVCamera, points: torch.Tensor, min_depth: float = 1e-2) -> torch.Tensor:
    """(P, 3) or (N, P, 3) world points to (N, P, 2) OpenCV pixels (column, row) in every camera.

    Unlike ``OpenCVCamera.project`` this never raises: depths below ``min_depth`` are clamped, so an
    optimiser step that swings a point behind a camera yields a large but finite residual.
    """
    cam = camera.world_to_camera(points)
    depth = cam[..., 2].clamp_min(min_depth)
    K = camera.K.to(points)
    u = K[:, None, 0, 0] * cam[..., 0] / depth + K[:, None, 0, 2]
    v = K[:, None, 1, 1] * cam[..., 1] / depth + K[:, None, 1, 2]
    return torch.stack([u, v], dim=-1)


def normalised_view_weights(view_weights: torch.Tensor | None, num_views: int, like: torch.Tensor) -> torch.Tensor:
    """(N,) weights summing to 1: the given ones normalised, or uniform."""
    if view_weights is None:
        return torch.full((num_views,), 1.0 / num_views, dtype=like.dtype, device=like.device)
    return view_weights / view_weights.sum().clamp_min(1e-8)


def reprojection_energy(projected: torch.Tensor, keypoints: torch.Tensor, confidence: torch.Tensor, rho: float,
                        view_weights: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_v w_v sum_k c_vk sum_xy gmof(x_hat - x, rho)`` with w normalised to sum 1 (GenZI's form).

    projected, keypoints: (N, K, 2) pixels.  confidence: (N, K).  view_weights: (N,) or None (uniform).
    """
    per_view = (confidence[..., None] * gmof(projected - keypoints, rho)).sum(dim=(-1, -2))
    return (normalised_view_weights(view_weights, projected.shape[0], projected) * per_view).sum()


def reprojection_error_px(projected: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """(N, K) Euclidean pixel distance per view and keypoint."""
    return (projected - keypoints).norm(dim=-1)


def gaussian_pose_energy(body_pose: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian over axis-angle components: ``sum ((theta - mu) / sigma)^2``, averaged over B.

    body_pose: (B, D); mean, std: (D,) or (D', ) with D' <= D (extra trailing joints unpenalised).
    """
    width = mean.shape[-1]
    return (((body_pose[..., :width] - mean) / std) ** 2).sum(-1).mean()


def joint_limit_energy(body_pose: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Squared hinge outside per-component limits: ``sum relu(lo - theta)^2 + relu(theta - hi)^2``, mean over B."""
    width = lower.shape[-1]
    theta = body_pose[..., :width]
    return (torch.relu(lower - theta) ** 2 + torch.relu(theta - upper) ** 2).sum(-1).mean()


def latent_energy(latent: torch.Tensor) -> torch.Tensor:
    """VPoser prior: ``sum z^2`` (the negative log-density of its N(0, I) latent, up to constants), mean over B."""
    return (latent ** 2).sum(-1).mean()


def shape_energy(betas: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``sum (w * beta)^2``, mean over B; w = 1 by default."""
    scaled = betas if weights is None else betas * weights
    return (scaled ** 2).sum(-1).mean()


def view_selection_energy(view_weights: torch.Tensor, min_views: float) -> torch.Tensor:
    """GenZI's ``relu(min_views - sum_v s_v)``: keeps at least ``min_views`` views switched on."""
    return torch.relu(min_views - view_weights.sum())


def procrustes_align(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``predicted`` (P, 3) after the similarity (scale, rotation, translation) that best fits ``target``."""
    mu_p, mu_t = predicted.mean(0), target.mean(0)
    p, t = predicted - mu_p, target - mu_t
    u, s, vh = torch.linalg.svd(p.T @ t)
    d = torch.ones(3, dtype=p.dtype, device=p.device)
    d[-1] = torch.sign(torch.det(u @ vh))
    rotation = u @ torch.diag(d) @ vh
    scale = (s * d).sum() / (p ** 2).sum()
    return scale * p @ rotation + mu_t


def mpjpe(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error (same units as the inputs)."""
    return (predicted - target).norm(dim=-1).mean()


def pa_mpjpe(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MPJPE after Procrustes alignment (scale, rotation, translation)."""
    return mpjpe(procrustes_align(predicted, target), target)
