"""Batched z-buffer rasterization of triangle meshes and point clouds, in torch (CPU or CUDA).

Both rasterizers take screen-space input from ``cameras.py``: (column, row, view depth), with pixel
centres at integer coordinates. Every primitive enumerates the pixels of its bounding box (in chunks
that bound memory), tests coverage, and the nearest hit per pixel wins through one
``scatter_reduce(amin)`` on a key that packs (depth bits, primitive id): ties in depth go to the
lower id, deterministically on every device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from engine.errors import InputError
from engine.mesh import as_faces

CANDIDATE_BUDGET = 6_000_000  # (pixel, primitive) pairs held in memory at once
_NO_HIT = torch.iinfo(torch.int64).max
_LOW_32 = 0xFFFFFFFF


@dataclass(frozen=True)
class Fragments:
    """Mesh rasterization result for N images of H x W pixels.

    pix_to_face: (N, H, W) int64 id of the visible face, -1 for background.
    bary: (N, H, W, 3) barycentric weights of that face's three vertices (perspective-correct),
        zero for background.
    zbuf: (N, H, W) view-space depth of the visible surface, -1 for background.
    """

    pix_to_face: torch.Tensor
    bary: torch.Tensor
    zbuf: torch.Tensor

    @property
    def covered(self) -> torch.Tensor:
        """(N, H, W) bool: a face is visible at the pixel."""
        return self.pix_to_face >= 0


@dataclass(frozen=True)
class PointFragments:
    """Point rasterization result: the K nearest points (by depth) within the radius of each pixel.

    idx: (N, H, W, K) int64 point ids sorted front to back, -1 where fewer than K points cover the pixel.
    zbuf: (N, H, W, K) view depth of those points, -1 where empty.
    dists: (N, H, W, K) squared NDC distance from the pixel centre to the point, -1 where empty.
    """

    idx: torch.Tensor
    zbuf: torch.Tensor
    dists: torch.Tensor


def bbox_candidates(col_min, col_max, row_min, row_max, width: int, height: int, active: torch.Tensor,
                    budget: int = CANDIDATE_BUDGET) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (item, row, col) int64 triples for every pixel centre inside each active item's box, in chunks.

    The boxes are float pixel coordinates (inclusive); they are clipped to the image. ``active`` (items,)
    bool skips items that must not be drawn (behind the camera, degenerate).
    """
    first_col = torch.ceil(col_min).clamp(min=0).long()
    last_col = torch.floor(col_max).clamp(max=width - 1).long()
    first_row = torch.ceil(row_min).clamp(min=0).long()
    last_row = torch.floor(row_max).clamp(max=height - 1).long()
    box_width = (last_col - first_col + 1).clamp(min=0)
    counts = box_width * (last_row - first_row + 1).clamp(min=0)
    items = torch.nonzero((counts > 0) & active).squeeze(1)
    if items.numel() == 0:
        return
    ends = torch.cumsum(counts[items], 0)
    start = 0
    while start < items.numel():
        base = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(torch.searchsorted(ends, base + budget, right=True)))
        chunk = items[start:stop]
        chunk_counts = counts[chunk]
        item = torch.repeat_interleave(chunk, chunk_counts)
        offset = torch.arange(item.numel(), device=item.device) - torch.repeat_interleave(
            torch.cumsum(chunk_counts, 0) - chunk_counts, chunk_counts)
        yield item, first_row[item] + offset // box_width[item], first_col[item] + offset % box_width[item]
        start = stop


def _check_screen(screen: torch.Tensor, name: str) -> None:
    if screen.dim() != 3 or screen.shape[-1] != 3:
        raise InputError(f"{name} must have shape (N, P, 3) in screen space, got {tuple(screen.shape)}")
    if not torch.isfinite(screen).all():
        raise InputError(f"{name} contains NaN or inf")


def _check_image_size(image_size) -> tuple[int, int]:
    height, width = (int(v) for v in image_size)
    if not (1 <= height <= 8192 and 1 <= width <= 8192):
        raise InputError(f"image size must be between 1 and 8192 pixels per side, got {height}x{width}")
    return height, width


def barycentric_coefficients(triangles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear maps from a pixel's offset to the first corner to its first two screen-space barycentrics.

    triangles: (M, 3, 2) screen xy.  Returns coefficients (M, 2, 2) such that, with
    ``(dx, dy) = (col, row) - triangles[:, 0]``, ``b_0 = 1 + c[0, 0] dx + c[0, 1] dy`` and
    ``b_1 = c[1, 0] dx + c[1, 1] dy`` (``b_2 = 1 - b_0 - b_1``), and the doubled signed area (M,).
    Working relative to a corner keeps float32 exact enough far from the image origin.
    """
    (x0, y0), (x1, y1), (x2, y2) = (triangles[:, k].unbind(-1) for k in range(3))
    area2 = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    safe = torch.where(area2.abs() > 1e-12, area2, torch.ones_like(area2))
    b0 = torch.stack([(y1 - y2), (x2 - x1)], -1) / safe[:, None]
    b1 = torch.stack([(y2 - y0), (x0 - x2)], -1) / safe[:, None]
    return torch.stack([b0, b1], dim=1), area2


def evaluate_barycentrics(coefficients, corners, rows, cols):
    """(M, 3) barycentrics of pixel centres (rows, cols) in triangles with the given first ``corners`` (M, 2)."""
    dx, dy = cols - corners[:, 0], rows - corners[:, 1]
    b0 = 1 + coefficients[:, 0, 0] * dx + coefficients[:, 0, 1] * dy
    b1 = coefficients[:, 1, 0] * dx + coefficients[:, 1, 1] * dy
    return torch.stack([b0, b1, 1 - b0 - b1], dim=-1)


def order_key(value: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Order-preserving int64 key for non-negative values (depths, distances), ties broken by the lower id
    (< 2^32): the smallest key per slot (``scatter_reduce(amin)``) names the nearest item."""
    bits = value.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    return (bits << 32) | ids


def rasterize_meshes(screen_verts: torch.Tensor, faces, image_size, *, perspective_correct: bool = True) -> Fragments:
    """Rasterize N views of one triangle topology: one face per pixel, no blur, both windings.

    screen_verts: (N, V, 3) (column, row, view depth).  faces: (F, 3).  Faces with any vertex at
    depth <= 0 (behind the camera) and degenerate faces are skipped.
    """
    _check_screen(screen_verts, "screen_verts")
    height, width = _check_image_size(image_size)
    faces = as_faces(faces, screen_verts.shape[1]).to(screen_verts.device)
    n_views, n_faces = screen_verts.shape[0], faces.shape[0]
    triangles = screen_verts[:, faces].reshape(-1, 3, 3)  # (N*F, 3 corners, xyz)
    coefficients, area2 = barycentric_coefficients(triangles[..., :2])
    drawable = (triangles[..., 2] > 1e-9).all(1) & (area2.abs() > 1e-12)
    xy = triangles[..., :2]
    keys = torch.full((n_views * height * width,), _NO_HIT, dtype=torch.int64, device=screen_verts.device)
    boxes = (xy[..., 0].amin(1), xy[..., 0].amax(1), xy[..., 1].amin(1), xy[..., 1].amax(1))
    inverse_depth = 1.0 / triangles[..., 2].clamp(min=1e-9)
    for tri, rows, cols in bbox_candidates(*boxes, width, height, drawable):
        bary = evaluate_barycentrics(coefficients[tri], xy[tri, 0], rows.to(xy.dtype), cols.to(xy.dtype))
        inside = torch.nonzero((bary >= 0).all(-1)).squeeze(1)
        tri, rows, cols, bary = tri[inside], rows[inside], cols[inside], bary[inside]
        depth = 1.0 / (bary * inverse_depth[tri]).sum(-1) if perspective_correct else (bary * triangles[tri, :, 2]).sum(-1)
        view = tri // n_faces
        pixel = (view * height + rows) * width + cols
        keys.scatter_reduce_(0, pixel, order_key(depth, tri % n_faces), reduce="amin")
    return _fragments_from_keys(keys, triangles, coefficients, inverse_depth, n_faces, (n_views, height, width),
                                perspective_correct)


def _fragments_from_keys(keys, triangles, coefficients, inverse_depth, n_faces, shape, perspective_correct):
    n_views, height, width = shape
    covered = torch.nonzero(keys != _NO_HIT).squeeze(1)
    face = keys[covered] & _LOW_32
    view = covered // (height * width)
    rows = (covered // width) % height
    cols = covered % width
    tri = view * n_faces + face
    bary = evaluate_barycentrics(coefficients[tri], triangles[tri, 0, :2], rows.to(triangles.dtype), cols.to(triangles.dtype))
    if perspective_correct:
        weighted = bary * inverse_depth[tri]
        depth = 1.0 / weighted.sum(-1)
        bary = weighted * depth[:, None]
    else:
        depth = (bary * triangles[tri, :, 2]).sum(-1)
    pix_to_face = torch.full((n_views * height * width,), -1, dtype=torch.int64, device=keys.device)
    pix_to_face[covered] = face
    bary_out = torch.zeros(n_views * height * width, 3, dtype=triangles.dtype, device=keys.device)
    bary_out[covered] = bary
    zbuf = torch.full((n_views * height * width,), -1.0, dtype=triangles.dtype, device=keys.device)
    zbuf[covered] = depth
    return Fragments(pix_to_face.view(shape), bary_out.view(*shape, 3), zbuf.view(shape))


def rasterize_points(screen_points: torch.Tensor, image_size, radius: float, points_per_pixel: int = 1) -> PointFragments:
    """Rasterize N views of P points as discs of ``radius`` NDC units (pytorch3d's point convention).

    screen_points: (N, P, 3) (column, row, view depth).  Points at depth <= 0 are skipped.
    """
    _check_screen(screen_points, "screen_points")
    height, width = _check_image_size(image_size)
    if not (0 < radius <= 1.0):
        raise InputError(f"point radius must be in (0, 1] NDC units, got {radius}")
    if not (1 <= points_per_pixel <= 64):
        raise InputError(f"points_per_pixel must be in [1, 64], got {points_per_pixel}")
    n_views, n_points = screen_points.shape[:2]
    half = min(height, width) / 2
    flat = screen_points.reshape(-1, 3)
    radius_px = radius * half
    col, row = flat[:, 0], flat[:, 1]
    hits = []
    for item, rows, cols in bbox_candidates(col - radius_px, col + radius_px, row - radius_px, row + radius_px,
                                            width, height, flat[:, 2] > 1e-9):
        dist2 = ((cols - flat[item, 0]) ** 2 + (rows - flat[item, 1]) ** 2) / half ** 2
        keep = dist2 < radius ** 2
        item, dist2 = item[keep], dist2[keep]
        pixel = ((item // n_points) * height + rows[keep]) * width + cols[keep]
        hits.append((pixel, item, dist2))
    return _nearest_points_per_pixel(hits, flat, n_points, (n_views, height, width, points_per_pixel))


def _nearest_points_per_pixel(hits, flat, n_points, shape):
    n_views, height, width, k = shape
    device, dtype = flat.device, flat.dtype
    idx = torch.full((n_views * height * width * k,), -1, dtype=torch.int64, device=device)
    zbuf = torch.full(idx.shape, -1.0, dtype=dtype, device=device)
    dists = torch.full(idx.shape, -1.0, dtype=dtype, device=device)
    if hits:
        pixel, item, dist2 = (torch.cat(parts) for parts in zip(*hits))
        by_depth = torch.sort(flat[item, 2], stable=True).indices
        pixel, item, dist2 = pixel[by_depth], item[by_depth], dist2[by_depth]
        by_pixel = torch.sort(pixel, stable=True).indices
        pixel, item, dist2 = pixel[by_pixel], item[by_pixel], dist2[by_pixel]
        group_start = torch.ones_like(pixel, dtype=torch.bool)
        group_start[1:] = pixel[1:] != pixel[:-1]
        start_positions = torch.cummax(torch.where(group_start, torch.arange(pixel.numel(), device=device),
                                                   torch.zeros_like(pixel)), 0).values
        rank = torch.arange(pixel.numel(), device=device) - start_positions
        keep = rank < k
        slot = pixel[keep] * k + rank[keep]
        idx[slot] = item[keep] % n_points
        zbuf[slot] = flat[item[keep], 2]
        dists[slot] = dist2[keep]
    return PointFragments(idx.view(shape), zbuf.view(shape), dists.view(shape))
