"""Render-Localize-Lift (InteractVLM, REFERENCE.md section 1): view presets, pixel-to-vertex maps,
``lift`` (2D mask probabilities to per-vertex scores) and ``project`` (vertex labels to 2D masks).

Every consumer lifts through this module; there is no second implementation.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from engine.errors import InputError
from engine.mesh import as_vertices, validate_mesh, vertex_normals
from engine.paths import cache_dir, cache_name, write_atomically
from engine.render.cameras import FoVPerspectiveCamera
from engine.render.rasterizer import rasterize_meshes, rasterize_points
from engine.render.shading import INTERACTVLM_LIGHTS, composite_points, nocs_colours, normals_as_colour, phong_shade

LOGIT_CLAMP = 20.0
OBJECT_VOTE_THRESHOLD = 0.3  # ObjectMeshContact3DPredictor: only pixels with p > 0.3 vote
OBJECT_RENDER_DIST = 1.5  # 4MV-Z_HM_BM mesh_cam_params; Φ keeps the distance-2 cam_params
RENDER_VERSION = "r2"  # bump when renders change: float32 cameras, bbox colours, one light per view
POINT_RADIUS = 0.05
POINTS_PER_PIXEL = 10


@dataclass(frozen=True)
class View:
    """A camera as InteractVLM parameterises it: look_at(dist, elev, azim) then a view-space (x, y) shift.
    ``light``: the view's own point light (object mesh renders), or None for ``INTERACTVLM_LIGHTS``."""

    name: str
    dist: float
    elev: float
    azim: float
    x: float = 0.0
    y: float = 0.0
    light: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class ViewPreset:
    """Named views for one kind of target. ``render_dist`` overrides ``dist`` for rendering only
    (object meshes render at 1.5 while the camera conditioning keeps the distance-2 parameters).
    ``colour``: "normals" (``(n + 1) / 2``, the body) or "bbox" (each axis of the normalised object
    mapped from its bounding box to [0.1, 0.9], i.e. ``x 0.8 + 0.1``: InteractVLM's object renders)."""

    name: str
    kind: str  # "mesh" or "points"
    views: tuple[View, ...]
    render_dist: float | None = None
    colour: str = "normals"

    def cameras(self, dtype=torch.float32) -> FoVPerspectiveCamera:
        column = lambda field: [getattr(view, field) for view in self.views]
        dist = [self.render_dist] * len(self.views) if self.render_dist else column("dist")
        return FoVPerspectiveCamera.look_at(dist, column("elev"), column("azim"), column("x"), column("y"), dtype=dtype)

    def camera_conditioning(self) -> torch.Tensor:
        """(V, 5) inputs of the camera lift: (dist/10, elev/360, azim/360, (x+1)/2, (y+1)/2)."""
        return torch.tensor([[v.dist / 10, v.elev / 360, v.azim / 360, (v.x + 1) / 2, (v.y + 1) / 2] for v in self.views])


_OBJECT_ANGLES = (("frontleft", 45, 315), ("frontright", 45, 45), ("backleft", 330, 135), ("backright", 330, 225))
# One light per view in the release's object renders: in front for the front views, behind for the back ones.
_OBJECT_LIGHTS = {"frontleft": (0.0, 0.0, 3.0), "frontright": (0.0, 0.0, 3.0),
                  "backleft": (0.0, 0.0, -3.0), "backright": (0.0, 0.0, -3.0)}
PRESETS: dict[str, ViewPreset] = {
    "body": ViewPreset("body", "mesh", (
        View("topfront", 2, 45, 315), View("bottomfront", 2, 315, 315, 0, 0.3),
        View("topback", 2, 45, 135), View("bottomback", 2, 315, 135, 0, 0.3))),
    "object_mesh": ViewPreset("object_mesh", "mesh", tuple(View(n, 2, e, a, light=_OBJECT_LIGHTS[n])
                                                         for n, e, a in _OBJECT_ANGLES),
                              render_dist=OBJECT_RENDER_DIST, colour="bbox"),
    "object_points": ViewPreset("object_points", "points", tuple(View(n, 2, e, a) for n, e, a in _OBJECT_ANGLES)),
    # Display only (the admin's review thumbnails): the whole body, front and back, centred and scaled like
    # an object, so no part is cropped on any body.
    "body_whole": ViewPreset("body_whole", "mesh", (View("front", 1.4, 0, 0, 0, 0.05), View("back", 1.4, 0, 180, 0, 0.05))),
}


def get_preset(name: str) -> ViewPreset:
    if name not in PRESETS:
        raise InputError(f"unknown view preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class LiftPlan:
    """The covered pixels of a set of views, flattened once so that lifting is two gathers and a bincount.

    pixel: (M,) flat index into (V*H*W).  slot: (M*C,) index into (V * num_vertices), C per pixel.
    weight: (M*C,) barycentric weight of each slot.  weight_sum: (V, num_vertices).  visible: (V, num_vertices).
    """

    channels: int
    pixel: torch.Tensor
    slot: torch.Tensor
    weight: torch.Tensor
    weight_sum: torch.Tensor
    visible: torch.Tensor


@dataclass(frozen=True)
class RenderedViews:
    """Multi-view renders of one target and where each pixel lands on it.

    images: (V, H, W, 3) uint8 shaded renders.
    vertex_ids: (V, H, W, C) int64 ids of the vertices (C=3, a mesh face) or point (C=1) seen at the
        pixel, -1 for background.
    bary: (V, H, W, C) float32 barycentric weights (1 for points), 0 for background.
    valid: (V, H, W) bool, something is rendered at the pixel.
    """

    preset: str
    topology: str
    num_vertices: int
    images: np.ndarray
    vertex_ids: np.ndarray
    bary: np.ndarray
    valid: np.ndarray

    @property
    def resolution(self) -> int:
        return self.images.shape[1]

    @cached_property
    def plan(self) -> LiftPlan:
        num_views = self.valid.shape[0]
        valid = torch.from_numpy(self.valid.reshape(-1))
        pixel = torch.nonzero(valid).squeeze(1)
        channels = self.vertex_ids.shape[-1]
        ids = torch.from_numpy(self.vertex_ids.reshape(-1, channels))[pixel]
        weight = torch.from_numpy(self.bary.reshape(-1, channels))[pixel].to(torch.float64)
        view = pixel // (self.valid.shape[1] * self.valid.shape[2])
        slot = view[:, None] * self.num_vertices + ids
        weight_sum = torch.bincount(slot.reshape(-1), weight.reshape(-1), minlength=num_views * self.num_vertices)
        weight_sum = weight_sum.view(num_views, self.num_vertices)
        return LiftPlan(channels, pixel, slot.reshape(-1), weight.reshape(-1), weight_sum, weight_sum > 0)

    def plan_on(self, device, dtype) -> LiftPlan:
        """``plan`` moved to a device with float weights of ``dtype`` (kept, so training moves it once)."""
        key = (str(device), dtype)
        if key not in self._plans:
            plan = self.plan
            self._plans[key] = LiftPlan(plan.channels, plan.pixel.to(device), plan.slot.to(device),
                                        plan.weight.to(device, dtype), plan.weight_sum.to(device, dtype),
                                        plan.visible.to(device))
        return self._plans[key]

    @cached_property
    def _plans(self) -> dict:
        return {}

    def visible_vertices(self) -> np.ndarray:
        """(num_vertices,) bool: seen in at least one view."""
        return self.plan.visible.any(0).numpy()


def _geometry_key(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _cache_path(topology: str, preset: str, resolution: int, key: str) -> Path:
    return cache_dir("rll") / f"{cache_name(topology)}-{preset}-{resolution}-{RENDER_VERSION}-{key}.npz"


def _save(views: RenderedViews, path: Path) -> None:
    """Store only the covered pixels: the maps are mostly background."""
    valid = views.valid
    write_atomically(path, lambda handle: np.savez(
        handle, images=views.images, valid=valid, ids=views.vertex_ids[valid].astype(np.int32),
        bary=views.bary[valid], meta=np.array([views.num_vertices])))


def _load(path: Path, preset: str, topology: str) -> RenderedViews:
    with np.load(path, allow_pickle=False) as archive:
        valid = archive["valid"]
        ids = np.full(valid.shape + archive["ids"].shape[-1:], -1, dtype=np.int64)
        ids[valid] = archive["ids"]
        bary = np.zeros(ids.shape, dtype=np.float32)
        bary[valid] = archive["bary"]
        return RenderedViews(preset, topology, int(archive["meta"][0]), archive["images"], ids, bary, valid)


def normalise_object(vertices: torch.Tensor) -> torch.Tensor:
    """Centre on the vertex mean and divide by the largest bounding-box extent (InteractVLM's object renders)."""
    centred = vertices - vertices.mean(0)
    extent = float((vertices.amax(0) - vertices.amin(0)).max())
    if extent <= 1e-9:
        raise InputError("the object is degenerate: all its vertices coincide")
    return centred / extent


def _render_mesh(preset: ViewPreset, vertices: torch.Tensor, faces: torch.Tensor, resolution: int, topology: str,
                 colours: torch.Tensor | None):
    cameras = preset.cameras(dtype=vertices.dtype).to(vertices.device)
    size = (resolution, resolution)
    normals = vertex_normals(vertices, faces)
    if colours is None:
        colours = nocs_colours(vertices) if preset.colour == "bbox" else normals_as_colour(normals)
    images, ids, bary, covered = [], [], [], []
    # Views with their own light are shaded one by one; the others share INTERACTVLM_LIGHTS.
    groups = ([[index] for index in range(len(preset.views))] if any(v.light for v in preset.views)
              else [list(range(len(preset.views)))])
    for group in groups:
        camera = FoVPerspectiveCamera(cameras.R[group], cameras.T[group], cameras.fov)
        light = preset.views[group[0]].light
        fragments = rasterize_meshes(camera.transform_points_screen(vertices, size), faces, size)
        images.append(phong_shade(fragments, faces, vertices, normals, colours.to(vertices), camera.camera_centres(),
                                  lights=INTERACTVLM_LIGHTS if light is None else (light,)))
        ids.append(torch.where(fragments.covered[..., None], faces[fragments.pix_to_face.clamp(min=0)], -1))
        bary.append(fragments.bary.to(torch.float32))
        covered.append(fragments.covered)
    images = (torch.cat(images) * 255).round().to(torch.uint8)
    return RenderedViews(preset.name, topology, vertices.shape[0], images.cpu().numpy(), torch.cat(ids).cpu().numpy(),
                         torch.cat(bary).cpu().numpy(), torch.cat(covered).cpu().numpy())


def _render_points(preset: ViewPreset, points: torch.Tensor, resolution: int, topology: str):
    cameras = preset.cameras(dtype=points.dtype).to(points.device)
    size = (resolution, resolution)
    fragments = rasterize_points(cameras.transform_points_screen(points, size), size, POINT_RADIUS, POINTS_PER_PIXEL)
    images = composite_points(fragments, nocs_colours(points), POINT_RADIUS)
    nearest = fragments.idx[..., :1]
    valid = nearest[..., 0] >= 0
    return RenderedViews(preset.name, topology, points.shape[0], (images * 255).round().to(torch.uint8).cpu().numpy(),
                         nearest.cpu().numpy(), valid[..., None].to(torch.float32).cpu().numpy(), valid.cpu().numpy())


def render_views(vertices, faces=None, *, preset: str = "body", resolution: int = 1024, topology: str,
                 vertex_colours=None, cache: bool = True) -> RenderedViews:
    """Render a body (``preset="body"``), an object mesh or a point cloud (``faces=None``) from the preset's views.

    The body is coloured by ``(normal + 1) / 2`` and object meshes by their bounding-box coordinates
    ``x 0.8 + 0.1`` with one light per view, as InteractVLM renders them; ``vertex_colours`` (V, 3) in
    [0, 1] overrides that (e.g. part colours for display). The pixel maps do not depend on colours.

    Objects are centred on their vertex mean and scaled by their largest bounding-box extent first. Results are cached on disk keyed by topology, preset,
    resolution and a hash of the geometry, so the 1024^2 body maps are computed once.
    """
    view_preset = get_preset(preset)
    if not 16 <= resolution <= 4096:
        raise InputError(f"resolution must be between 16 and 4096, got {resolution}")
    if (faces is None) != (view_preset.kind == "points"):
        raise InputError(f"preset {preset!r} renders {view_preset.kind}; pass faces exactly for meshes")
    if faces is None:
        vertices, faces_tensor = as_vertices(vertices, name="points"), None
    else:
        vertices, faces_tensor = validate_mesh(vertices, faces)
    if preset != "body":
        vertices = normalise_object(vertices)
    colours = _vertex_colours(vertex_colours, vertices.shape[0])
    arrays = [vertices.detach().cpu().numpy().astype(np.float32)] + ([] if faces is None else [faces_tensor.cpu().numpy()])
    arrays += [] if colours is None else [colours.numpy()]
    path = _cache_path(topology, preset, resolution, _geometry_key(*arrays))
    if cache and path.exists():
        return _load(path, preset, topology)
    if faces_tensor is None:
        views = _render_points(view_preset, vertices, resolution, topology)
    else:
        views = _render_mesh(view_preset, vertices, faces_tensor, resolution, topology, colours)
    if cache:
        _save(views, path)
    return views


def _vertex_colours(colours, num_vertices: int) -> torch.Tensor | None:
    if colours is None:
        return None
    tensor = torch.as_tensor(colours, dtype=torch.float32)
    if tensor.shape != (num_vertices, 3) or not torch.isfinite(tensor).all() or tensor.min() < 0 or tensor.max() > 1:
        raise InputError(f"vertex_colours must be finite ({num_vertices}, 3) values in [0, 1]")
    return tensor


def _as_masks(views: RenderedViews, masks, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(masks)
    if tensor.shape != views.valid.shape:
        raise InputError(f"{name} must have shape {tuple(views.valid.shape)} (views, H, W), got {tuple(tensor.shape)}")
    tensor = tensor.to(torch.float64)
    if not torch.isfinite(tensor).all():
        raise InputError(f"{name} contains NaN or inf")
    return tensor


def lift(views: RenderedViews, mask_probs) -> np.ndarray:
    """Per-vertex scores (num_vertices,) in [0, 1] from per-view mask probabilities (V, H, W).

    Each covered pixel adds ``w_i * p`` and ``w_i`` to its vertices (w_i barycentric); a view's score
    is ``sum(w p) / sum(w)``; the result is the mean over the views where the vertex is visible (0 where
    it never is). No threshold: consumers threshold (F1 at 0.5, display at 0.3).
    """
    probs = _as_masks(views, mask_probs, "mask_probs")
    if probs.min() < 0 or probs.max() > 1:
        raise InputError("mask_probs must be probabilities in [0, 1]; use lift_logits for raw logits")
    return lift_tensor(views, probs).to(torch.float32).cpu().numpy()


def lift_tensor(views: RenderedViews, probs: torch.Tensor) -> torch.Tensor:
    """``lift`` for training: (..., V, H, W) probabilities -> (..., num_vertices), differentiable, on
    ``probs``' device and dtype. Inputs are trusted (no range checks)."""
    plan = views.plan_on(probs.device, probs.dtype)
    lead = probs.shape[:-3]
    per_pixel = probs.reshape(*lead, -1)[..., plan.pixel]
    votes = plan.weight * per_pixel.repeat_interleave(plan.channels, dim=-1)
    numerator = votes.new_zeros(*lead, plan.weight_sum.numel()).index_add(-1, plan.slot, votes)
    numerator = numerator.view(*lead, *plan.weight_sum.shape)
    per_view = torch.where(plan.visible, numerator / plan.weight_sum.clamp(min=1e-12), torch.zeros_like(numerator))
    seen = plan.visible.sum(0)
    return (per_view.sum(-2) / seen.clamp(min=1)).clamp(0, 1)


def lift_logits(views: RenderedViews, logits) -> np.ndarray:
    """``lift`` of ``sigmoid(clamp(logits, -20, 20))``, as InteractVLM lifts its mask decoder's output."""
    tensor = _as_masks(views, logits, "logits")
    return lift(views, torch.sigmoid(tensor.clamp(-LOGIT_CLAMP, LOGIT_CLAMP)))


def lift_object_mesh(views: RenderedViews, mask_probs, vote_threshold: float = OBJECT_VOTE_THRESHOLD) -> np.ndarray:
    """Object-mesh lifting as InteractVLM's ``ObjectMeshContact3DPredictor``: per view, only pixels with
    ``p > vote_threshold`` vote, and a vertex's view score is ``sum(w p) / sum(w)`` over those pixels alone;
    the result averages only the views where the vertex got such a vote (0 where it never did)."""
    probs = _as_masks(views, mask_probs, "mask_probs")
    if probs.min() < 0 or probs.max() > 1:
        raise InputError("mask_probs must be probabilities in [0, 1]")
    plan = views.plan
    per_pixel = probs.reshape(-1)[plan.pixel].repeat_interleave(plan.channels)
    voting = (per_pixel > vote_threshold).to(torch.float64)
    size = plan.weight_sum.numel()
    numerator = torch.bincount(plan.slot, plan.weight * per_pixel * voting, minlength=size).view(plan.weight_sum.shape)
    weight = torch.bincount(plan.slot, plan.weight * voting, minlength=size).view(plan.weight_sum.shape)
    voted = weight > 0
    per_view = torch.where(voted, numerator / weight.clamp(min=1e-300), torch.zeros_like(numerator))
    views_voted = voted.sum(0)
    lifted = torch.where(views_voted > 0, per_view.sum(0) / views_voted.clamp(min=1), torch.zeros(()).to(per_view))
    return lifted.to(torch.float32).numpy()


def lift_points(views: RenderedViews, mask_probs) -> np.ndarray:
    """Point clouds: the mean heat-map value of the pixels whose front point is each point, averaged over views."""
    if views.vertex_ids.shape[-1] != 1:
        raise InputError("lift_points needs point-cloud views (render_views with faces=None)")
    return lift(views, mask_probs)


def project(views: RenderedViews, vertex_labels, min_vertices: int = 3) -> np.ndarray:
    """Per-view ground-truth masks (V, H, W) bool: a pixel is on when its face has at least
    ``min_vertices`` labelled vertices (a point-cloud pixel when its point is labelled)."""
    labels = np.asarray(vertex_labels)
    if labels.shape != (views.num_vertices,):
        raise InputError(f"vertex_labels must have shape ({views.num_vertices},), got {labels.shape}")
    if not np.isfinite(labels.astype(np.float64)).all():
        raise InputError("vertex_labels contains NaN or inf")
    channels = views.vertex_ids.shape[-1]
    if not 1 <= min_vertices <= 3:
        raise InputError(f"min_vertices must be 1, 2 or 3, got {min_vertices}")
    positive = np.append(labels > 0.5, False)  # index -1 (background) reads the trailing False
    counts = positive[views.vertex_ids].sum(-1)
    return (counts >= min(min_vertices, channels)) & views.valid
