"""Cameras and every coordinate convention of the studio, in one place.

World
    Metres, Y up, right-handed (the SMPL-X frame): a body in its template pose faces +Z and its left
    hand is on +X.

pytorch3d view space (InteractVLM's renders)
    +X left, +Y up, +Z into the screen, row-vector convention ``X_view = X_world @ R + T``.
    ``look_at_view_transform(dist, elev, azim)`` puts the camera centre at
    ``C = at + dist * (cos(elev) sin(azim), sin(elev), cos(elev) cos(azim))`` and builds
    ``z = normalize(at - C)``, ``x = normalize(up x z)``, ``y = z x x``; ``R`` has x, y, z as its
    columns and ``T = -C @ R``. All of it in float32 with pytorch3d's eps, which decides the frame at
    the poles (``look_at_view_transform``). InteractVLM then shifts the view: ``T[0] += x`` and ``T[1] += y``
    (the first two components of the translation).

FoV perspective projection (``FoVPerspectiveCameras``, aspect ratio 1)
    ``ndc_x = s * X / Z`` and ``ndc_y = s * Y / Z`` with ``s = 1 / tan(fov / 2)``; the depth kept by
    the rasterizer is view-space ``Z`` (as pytorch3d's ``zbuf``).

NDC to pixels (pytorch3d's screen convention)
    For an H x W image let ``half = min(H, W) / 2``. Pixel (row i, column j) has its centre at
    ``j = W/2 - ndc_x * half - 1/2`` and ``i = H/2 - ndc_y * half - 1/2``: NDC (+1, +1) is the
    top-left corner, pixel (0, 0) is the top-left pixel, and pixel centres sit at integer (i, j).
    Screen-space points are ``(j, i, Z)``: column, row, view depth.

OpenCV cameras (image-space fitting: HOI, GenZI)
    +X right, +Y down, +Z forward, column-vector convention ``X_cam = R_cv X_world + t_cv``,
    ``u = fx X/Z + cx`` (column), ``v = fy Y/Z + cy`` (row), pixel centres at integers.
    A pytorch3d FoV camera converts exactly with ``F = diag(-1, -1, 1)``: ``R_cv = F R^T``,
    ``t_cv = F T``, ``fx = fy = s * half``, ``cx = W/2 - 1/2``, ``cy = H/2 - 1/2``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.errors import InputError

_FLIP_XY = torch.tensor([-1.0, -1.0, 1.0])


def _as_batch(value, dtype) -> torch.Tensor:
    return torch.as_tensor(value, dtype=dtype).reshape(-1)


LOOK_AT_EPS = 1e-5  # pytorch3d look_at_rotation: F.normalize(..., eps=1e-5)
LOOK_AT_POLE_ATOL = 5e-3  # pytorch3d: an x axis this close to 0 is rebuilt from y x z


def _normalise(vectors: torch.Tensor) -> torch.Tensor:
    """``F.normalize(v, eps=1e-5)``: a vector shorter than eps is divided by eps, not by its length."""
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp(min=LOOK_AT_EPS)


def look_at_view_transform(dist, elev, azim, *, at=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0),
                           dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """pytorch3d's ``look_at_view_transform`` in degrees: returns R (N, 3, 3) and T (N, 3).

    Computed in float32 as pytorch3d computes it, then cast to ``dtype``. At the poles this matters:
    in float32 ``cos(270 deg)`` is -4.4e-8, not 0, so the camera keeps its azimuth. ``up x z`` is then
    tiny; pytorch3d divides it by its eps (1e-5) rather than its length, finds it within 5e-3 of zero
    and rebuilds x as ``y x z``. The image at (270, 180) is therefore rotated 180 degrees from the one
    at (270, 0); an exact (float64) computation would lose the azimuth and give both the same frame.
    """
    dist, elev, azim = torch.broadcast_tensors(*(_as_batch(v, torch.float32) for v in (dist, elev, azim)))
    elev, azim = elev * (math.pi / 180.0), azim * (math.pi / 180.0)
    centre = torch.stack([dist * torch.cos(elev) * torch.sin(azim), dist * torch.sin(elev),
                          dist * torch.cos(elev) * torch.cos(azim)], dim=-1)
    at = torch.as_tensor(at, dtype=torch.float32).expand_as(centre)
    centre = centre + at
    up = torch.as_tensor(up, dtype=torch.float32).expand_as(centre)
    z_axis = _normalise(at - centre)
    x_axis = _normalise(torch.linalg.cross(up, z_axis, dim=-1))
    y_axis = _normalise(torch.linalg.cross(z_axis, x_axis, dim=-1))
    near_pole = (x_axis.abs() <= LOOK_AT_POLE_ATOL).all(dim=-1, keepdim=True)
    x_axis = torch.where(near_pole, _normalise(torch.linalg.cross(y_axis, z_axis, dim=-1)), x_axis)
    rotation = torch.stack([x_axis, y_axis, z_axis], dim=-1)  # axes as columns
    translation = -torch.einsum("nc,ncd->nd", centre, rotation)
    return rotation.to(dtype), translation.to(dtype)


@dataclass(frozen=True)
class FoVPerspectiveCamera:
    """A batch of N pytorch3d-style FoV perspective cameras.

    R: (N, 3, 3) world-to-view rotation (row vectors).  T: (N, 3) translation.  fov: degrees.
    """

    R: torch.Tensor
    T: torch.Tensor
    fov: float = 60.0

    @classmethod
    def look_at(cls, dist, elev, azim, x=0.0, y=0.0, *, fov: float = 60.0, dtype=torch.float32):
        """Cameras as InteractVLM builds them: look_at_view_transform, then T[0] += x and T[1] += y (float32)."""
        rotation, translation = look_at_view_transform(dist, elev, azim)
        offsets = torch.zeros_like(translation)
        offsets[:, 0], offsets[:, 1] = _as_batch(x, torch.float32), _as_batch(y, torch.float32)
        return cls(R=rotation.to(dtype), T=(translation + offsets).to(dtype), fov=fov)

    def __len__(self) -> int:
        return self.R.shape[0]

    @property
    def focal_ndc(self) -> float:
        return 1.0 / math.tan(math.radians(self.fov) / 2)

    def to(self, device=None, dtype=None) -> "FoVPerspectiveCamera":
        return FoVPerspectiveCamera(self.R.to(device=device, dtype=dtype), self.T.to(device=device, dtype=dtype), self.fov)

    def camera_centres(self) -> torch.Tensor:
        """(N, 3) camera positions in world coordinates."""
        return -torch.einsum("nd,ncd->nc", self.T, self.R)

    def world_to_view(self, points: torch.Tensor) -> torch.Tensor:
        """(P, 3) or (N, P, 3) world points to (N, P, 3) view points."""
        points = points.expand(len(self), *points.shape[-2:]) if points.dim() == 2 else points
        return torch.einsum("npc,ncd->npd", points, self.R.to(points)) + self.T.to(points)[:, None]

    def view_to_screen(self, view: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(N, P, 3) view points to screen points (column, row, depth)."""
        height, width = image_size
        half = min(height, width) / 2
        depth = view[..., 2]
        safe = torch.where(depth.abs() > 1e-9, depth, torch.full_like(depth, 1e-9))
        ndc_x, ndc_y = self.focal_ndc * view[..., 0] / safe, self.focal_ndc * view[..., 1] / safe
        return torch.stack([width / 2 - ndc_x * half - 0.5, height / 2 - ndc_y * half - 0.5, depth], dim=-1)

    def transform_points_screen(self, points: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        return self.view_to_screen(self.world_to_view(points), image_size)

    def to_opencv(self, image_size: tuple[int, int]) -> "OpenCVCamera":
        """The exact OpenCV equivalent (see the module docstring)."""
        height, width = image_size
        focal = self.focal_ndc * min(height, width) / 2
        flip = _FLIP_XY.to(self.R)
        K = torch.zeros(len(self), 3, 3, dtype=self.R.dtype, device=self.R.device)
        K[:, 0, 0], K[:, 1, 1], K[:, 2, 2] = focal, focal, 1.0
        K[:, 0, 2], K[:, 1, 2] = width / 2 - 0.5, height / 2 - 0.5
        return OpenCVCamera(K=K, R=flip[None, :, None] * self.R.transpose(1, 2), t=flip * self.T)


@dataclass(frozen=True)
class OpenCVCamera:
    """A batch of N pinhole cameras with OpenCV intrinsics.

    K: (N, 3, 3) intrinsics.  R: (N, 3, 3) world-to-camera rotation (column vectors).  t: (N, 3).
    """

    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor

    def __len__(self) -> int:
        return self.K.shape[0]

    def world_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        points = points.expand(len(self), *points.shape[-2:]) if points.dim() == 2 else points
        return torch.einsum("ncd,npd->npc", self.R.to(points), points) + self.t.to(points)[:, None]

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """(P, 3) or (N, P, 3) world points to (N, P, 3): column u, row v, depth Z."""
        cam = self.world_to_camera(points)
        depth = cam[..., 2]
        if (depth <= 0).any():
            raise InputError("points behind an OpenCV camera cannot be projected (depth <= 0)")
        K = self.K.to(points)
        u = K[:, None, 0, 0] * cam[..., 0] / depth + K[:, None, 0, 2]
        v = K[:, None, 1, 1] * cam[..., 1] / depth + K[:, None, 1, 2]
        return torch.stack([u, v, depth], dim=-1)
