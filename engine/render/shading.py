"""Shading: normals-as-colour, NOCS colours, hard Phong with point lights, value overlays, point compositing.

Phong follows pytorch3d's ``HardPhongShader`` with its default material and light colours
(ambient 0.5, diffuse 0.3, specular 0.2, shininess 64), the values InteractVLM renders with:
``colour = (ambient + sum_l diffuse_l) * texel + sum_l specular_l``, normals and colours interpolated
per pixel with the fragment's barycentrics.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.render.rasterizer import Fragments, PointFragments


@dataclass(frozen=True)
class PhongMaterial:
    ambient: float = 0.5
    diffuse: float = 0.3
    specular: float = 0.2
    shininess: float = 64.0


INTERACTVLM_LIGHTS: tuple[tuple[float, float, float], ...] = ((0.0, 0.0, 3.0), (0.0, 0.0, -3.0))
WHITE = (1.0, 1.0, 1.0)


def normals_as_colour(normals: torch.Tensor) -> torch.Tensor:
    """Map unit normals in [-1, 1] to colours in [0, 1]: ``(n + 1) / 2``."""
    return (normals + 1.0) / 2.0


def nocs_colours(points: torch.Tensor) -> torch.Tensor:
    """(P, 3) normalised object coordinates: each axis mapped from its bounding box to [0.1, 0.9]."""
    low, high = points.amin(0), points.amax(0)
    extent = torch.where(high - low > 1e-12, high - low, torch.ones_like(high))
    return 0.1 + 0.8 * (points - low) / extent


def categorical_colours(labels) -> torch.Tensor:
    """(V, 3) distinct, stable colours for integer labels (golden-ratio hue steps)."""
    labels = torch.as_tensor(labels, dtype=torch.float64)
    hue = (labels * 0.618033988749895) % 1.0
    sector = hue * 6
    rgb = torch.stack([(sector - 3).abs() - 1, 2 - (sector - 2).abs(), 2 - (sector - 4).abs()], -1).clamp(0, 1)
    return (0.35 + 0.55 * rgb).to(torch.float32)


def overlay_values(base: torch.Tensor, values: torch.Tensor, colour=(1.0, 0.0, 0.0)) -> torch.Tensor:
    """(V, 3) colours blended towards ``colour`` by per-vertex ``values`` in [0, 1]."""
    weight = values.clamp(0, 1)[:, None].to(base)
    return base * (1 - weight) + torch.as_tensor(colour, dtype=base.dtype, device=base.device) * weight


def _covered_pixels(fragments: Fragments) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat indices of covered pixels, their view index and face id."""
    flat = fragments.pix_to_face.reshape(-1)
    pixel = torch.nonzero(flat >= 0).squeeze(1)
    height, width = fragments.pix_to_face.shape[1:]
    return pixel, pixel // (height * width), flat[pixel]


def _interpolate_at(pixel, view, face, fragments, faces, attributes):
    if attributes.dim() == 2:
        corners = attributes[faces[face]]
    else:
        corners = attributes[view[:, None], faces[face]]
    bary = fragments.bary.reshape(-1, 3)[pixel].to(attributes)
    return (bary[..., None] * corners).sum(-2)


def interpolate(fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes (V, C) or (N, V, C) to (N, H, W, C), zero off the mesh."""
    pixel, view, face = _covered_pixels(fragments)
    out = torch.zeros(fragments.pix_to_face.numel(), attributes.shape[-1], dtype=attributes.dtype, device=attributes.device)
    out[pixel] = _interpolate_at(pixel, view, face, fragments, faces, attributes)
    return out.view(*fragments.pix_to_face.shape, -1)


def phong_shade(fragments: Fragments, faces: torch.Tensor, vertices: torch.Tensor, normals: torch.Tensor,
                colours: torch.Tensor, camera_centres: torch.Tensor, *, lights=INTERACTVLM_LIGHTS,
                material: PhongMaterial = PhongMaterial(), background=WHITE) -> torch.Tensor:
    """Hard Phong shading of rasterized meshes. Returns (N, H, W, 3) in [0, 1]; only covered pixels are shaded."""
    pixel, view, face = _covered_pixels(fragments)
    at = lambda attributes: _interpolate_at(pixel, view, face, fragments, faces, attributes)
    points, texel = at(vertices), at(colours).to(vertices)
    normal = torch.nn.functional.normalize(at(normals), dim=-1)
    to_camera = torch.nn.functional.normalize(camera_centres.to(points)[view] - points, dim=-1)
    diffuse = torch.zeros_like(points[:, :1])
    specular = torch.zeros_like(points[:, :1])
    for location in lights:
        to_light = torch.nn.functional.normalize(torch.as_tensor(location).to(points) - points, dim=-1)
        cos_light = (normal * to_light).sum(-1, keepdim=True)
        diffuse = diffuse + material.diffuse * cos_light.clamp(min=0)
        reflected = -to_light + 2 * cos_light * normal
        alignment = (reflected * to_camera).sum(-1, keepdim=True).clamp(min=0) * (cos_light > 0)
        specular = specular + material.specular * alignment ** material.shininess
    image = torch.as_tensor(background).to(points).repeat(fragments.pix_to_face.numel(), 1)
    image[pixel] = ((material.ambient + diffuse) * texel + specular).clamp(0, 1)
    return image.view(*fragments.pix_to_face.shape, 3)


def composite_points(fragments: PointFragments, colours: torch.Tensor, radius: float, background=WHITE) -> torch.Tensor:
    """pytorch3d's alpha compositor: alpha = 1 - d^2 / r^2, composited front to back over ``background``."""
    valid = fragments.idx >= 0
    alpha = torch.where(valid, 1 - fragments.dists / radius ** 2, torch.zeros_like(fragments.dists)).clamp(0, 1)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha[..., :-1]], -1), -1)
    weight = alpha * transmittance
    texel = colours[fragments.idx.clamp(min=0)]
    image = (weight[..., None] * texel).sum(-2)
    remaining = torch.prod(1 - alpha, -1, keepdim=True)
    return image + remaining * torch.as_tensor(background).to(image)
