"""A differentiable soft silhouette (SoftRas-style) for render-and-compare fitting.

Each face contributes ``D = sigmoid(s * d^2 / sigma)`` to a pixel, where d is the screen distance
from the pixel centre to the triangle and s = +1 inside, -1 outside. A pixel inside at least one face
is covered ``1 - prod_f (1 - D_f)`` (SoftRas, pytorch3d); a pixel outside every face takes the largest D,
i.e. the sigmoid of its distance to the mesh's union. The plain ``1 - prod`` outside adds up the tails of
every small face near a pixel: on the built-in objects (5k faces) at 128 px it dilated the silhouette by
about a pixel (1005 pixels >= 0.5 against 663 rasterized; hard IoU 0.66 with the object's own mask at the
true pose), which biased the fit towards the camera. With the max, the 0.5 level is the rasterizer's edge. Only faces whose box, grown by the distance at which D falls below 1e-8,
holds the pixel are evaluated, so cost scales with the mesh's screen area and not with H * W * F.

For the HOI fit: ``release_sigma_pixels`` converts the release's NDC sigma to pixels, ``depth_map`` is a
hard z-buffer of an occluder (the body), and ``visible_soft_silhouette`` removes what the occluder hides.
"""
from __future__ import annotations

import math

import torch

from engine.errors import InputError
from engine.mesh import as_faces
from engine.render.rasterizer import barycentric_coefficients, bbox_candidates, rasterize_meshes

_NEGLIGIBLE = 1e-8


def soft_silhouette(screen_verts: torch.Tensor, faces, image_size, sigma: float = 1.0, *,
                    negligible: float = _NEGLIGIBLE, cull_backfaces: bool = False) -> torch.Tensor:
    """Differentiable coverage (N, H, W) in [0, 1].

    screen_verts: (N, V, 3) (column, row, depth) from a camera; gradients flow to them.
    sigma: softness in squared pixels (larger is blurrier).
    negligible: a face is skipped where its D is below this (pytorch3d's blur radius
        ``log(1 / 1e-4 - 1) * sigma`` is ``negligible = 1e-4``, what InteractVLM's fit uses).
    cull_backfaces: draw only faces wound counter-clockwise as seen (front faces of an outward-wound
        closed mesh, whose silhouette they cover alone); in (column, row) screen space those have a
        negative doubled area.
    """
    if not 0 < negligible < 0.5:
        raise InputError(f"negligible must be in (0, 0.5), got {negligible}")
    if sigma <= 0 or not math.isfinite(sigma):
        raise InputError(f"sigma must be a positive number of squared pixels, got {sigma}")
    height, width = (int(v) for v in image_size)
    faces = as_faces(faces, screen_verts.shape[1]).to(screen_verts.device)
    n_views, n_faces = screen_verts.shape[0], faces.shape[0]
    triangles = screen_verts[:, faces].reshape(-1, 3, 3)
    xy = triangles[..., :2]
    margin = math.sqrt(sigma * math.log(1 / negligible - 1))
    with torch.no_grad():
        _, area2 = barycentric_coefficients(xy)
        drawable = (triangles[..., 2] > 1e-9).all(1) & (area2.abs() > 1e-12)
        if cull_backfaces:
            drawable &= area2 < 0
        boxes = (xy[..., 0].amin(1) - margin, xy[..., 0].amax(1) + margin,
                 xy[..., 1].amin(1) - margin, xy[..., 1].amax(1) + margin)
    n_pixels = n_views * height * width
    log_uncovered = torch.zeros(n_pixels, dtype=screen_verts.dtype, device=screen_verts.device)
    nearest = torch.zeros(n_pixels, dtype=screen_verts.dtype, device=screen_verts.device)
    inside_any = torch.zeros(n_pixels, dtype=torch.bool, device=screen_verts.device)
    for tri, rows, cols in bbox_candidates(*boxes, width, height, drawable):
        pixel_xy = torch.stack([cols, rows], -1).to(xy.dtype)
        start = xy[tri]  # (M, 3 edges, 2): edge k runs from corner k to corner k + 1
        direction = start.roll(-1, dims=1) - start
        offset = pixel_xy[:, None] - start
        along = ((offset * direction).sum(-1) / (direction * direction).sum(-1).clamp(min=1e-12)).clamp(0, 1)
        dist2 = ((offset - along[..., None] * direction) ** 2).sum(-1).amin(-1)
        with torch.no_grad():  # inside when the pixel is on the same side of all three edges
            side = direction[..., 0] * offset[..., 1] - direction[..., 1] * offset[..., 0]
            sign = torch.where((side >= 0).all(-1) | (side <= 0).all(-1), 1.0, -1.0).to(xy.dtype)
        probability = torch.sigmoid(sign * dist2 / sigma).clamp(max=1 - 1e-7)
        pixel = ((tri // n_faces) * height + rows) * width + cols
        log_uncovered = log_uncovered.index_add(0, pixel, torch.log1p(-probability))
        nearest = nearest.scatter_reduce(0, pixel, probability, reduce="amax")
        with torch.no_grad():
            inside_any.index_fill_(0, pixel[sign > 0], True)
    coverage = torch.where(inside_any, 1 - torch.exp(log_uncovered), nearest)
    return coverage.view(n_views, height, width)


def release_sigma_pixels(image_size, sigma_ndc: float = 1e-4) -> float:
    """pytorch3d's SoftSilhouetteShader sigma (squared NDC units, InteractVLM's ``optim/`` uses 1e-4) in
    the squared pixels ``soft_silhouette`` takes: NDC spans ``min(H, W) / 2`` pixels per unit."""
    height, width = (int(v) for v in image_size)
    return float(sigma_ndc) * (min(height, width) / 2) ** 2


def depth_map(screen_verts: torch.Tensor, faces, image_size) -> torch.Tensor:
    """(N, H, W) view depth of the nearest surface, ``inf`` where nothing is drawn (hard z-buffer, no gradient).

    Used for occlusion: an occluder's depth map is compared with what is drawn behind it.
    """
    with torch.no_grad():
        fragments = rasterize_meshes(screen_verts.detach(), faces, image_size)
    return torch.where(fragments.covered, fragments.zbuf, torch.full_like(fragments.zbuf, float("inf")))


def visible_soft_silhouette(screen_verts: torch.Tensor, faces, image_size, sigma: float,
                            occluder_depth: torch.Tensor | None = None, **options) -> torch.Tensor:
    """``soft_silhouette`` with the pixels hidden by an occluder removed: (N, H, W) in [0, 1].

    occluder_depth: (N, H, W) from ``depth_map`` of the occluder (the fixed body), or None for no occlusion.
    A pixel is hidden where the occluder is nearer than the object's own hard z-buffer there; in the soft
    margin just outside the object's hard coverage, the object's median vertex depth stands in for its
    depth. The visibility is a constant mask per render (no gradient through depth ordering), so the
    gradient of the visible part is the soft silhouette's.
    ``options`` go to ``soft_silhouette`` (``negligible``, ``cull_backfaces``).
    """
    coverage = soft_silhouette(screen_verts, faces, image_size, sigma, **options)
    if occluder_depth is None:
        return coverage
    own_depth = depth_map(screen_verts, faces, image_size)
    fallback = screen_verts.detach()[..., 2].median(dim=1).values[:, None, None].expand_as(own_depth)
    own_depth = torch.where(torch.isfinite(own_depth), own_depth, fallback)
    hidden = occluder_depth.to(own_depth) < own_depth
    return coverage * (~hidden).to(coverage.dtype)
