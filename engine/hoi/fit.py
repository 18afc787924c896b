"""The HOI fit: place an object against a fixed body so that it matches the image's object mask and
touches the body where the contacts say (InteractVLM section 5; REFERENCE.md section 1, "HOI fitting").

    result = fit_object(body, obj, mask, contacts, FitConfig())           # the method
    baseline = fit_object(body, obj, mask, None, FitConfig())             # "silhouette only (no contacts)"

Frames and pose (as the release's ``optim/``): everything is in the image's OpenCV camera frame. The
object is centred on its vertex mean and turned into that frame by negating y and z (a built-in, Y-up,
then stands upright); its pose acts on row vectors, ``x_cam = s * (x_obj @ R) + t``.

Stages (``fit_object``), each timed and reported through ``progress(fraction, message)``:
    1. camera: intrinsics scaled to the render size; the mask resized (area average) to it; the body's
       depth map rendered once, for occlusion.
    2. translation: the mask centroid (row, col) back-projected at the mean depth of the human contacts
       (p > 0.5); the baseline, which has no contacts, uses the body's mean depth.
    3. ICP (contacts only): at most 10 iterations, object contacts (p > 0.3) to human contacts (p > 0.5),
       nearest neighbours in xyz + normal with the human normals negated, Umeyama without scale; the patch
       centroids are aligned first and matches are rejected (normals at > 90 degrees, beyond 2.5 x the
       median distance, all but one per human point), see ``geometry.contact_icp``. Its pose is kept only
       when it does not raise the image terms of E over the stage-2 start.
    4. Adam over the 6D rotation (lr 5e-2), the translation (lr 1e-2) and optionally the scale, 250
       iterations, minimising  E = 5 (1 - soft IoU) + 1e-4 |centroid(rendered) - centroid(mask)|^2 px
       + 10 sum_ij d_ij p_i p_j / sum_ij p_i p_j  (the last term dropped for the baseline).  The body is fixed.

Where the release departs from its own description we follow the description (REFERENCE.md lists them):
    - translation from the mask centroid (the release averages (row + col) / 2 of the first two mask pixels);
    - ICP iterates up to 10 times (the release finds correspondences once: one Umeyama step);
    - a true soft IoU, sum(a m) / sum(a + m - a m) (the release's "union" sum(a + m) scores identical masks 0.5);
    - the silhouette is occluded by the body, whose depth is rendered (the release renders the object alone);
    - the centroid term compares the mask centroids as described (the release uses the target box centre).
The learning rates are the release's (hard-coded there) and 250 iterations its config's.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np
import torch

from engine.errors import InputError
from engine.hoi.geometry import apply_pose, contact_icp, matrix_to_rotation_6d, rotation_6d_to_matrix
from engine.hoi.inputs import BodyInput, Contacts, Intrinsics, back_project, check_contacts, check_mask, project
from engine.mesh import vertex_normals
from engine.objects import ObjectGeometry
from engine.render.silhouette import MeshEdges, depth_map, release_sigma_pixels, visible_soft_silhouette

METHOD = "interactvlm contacts"
BASELINE_METHOD = "silhouette only (no contacts)"
NO_OVERLAP = ("the object mask does not overlap the object's projection at all: the mask may mark another "
              "object, or the contacts place the object elsewhere; check the mask and the contacts")
# The release's object frame: centred, then y and z negated (a built-in, Y-up, stands upright in OpenCV).
TO_CAMERA_FRAME = np.diag([1.0, -1.0, -1.0])
ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class FitConfig:
    """Every number of the fit (defaults: REFERENCE.md section 1 and the release's ``cfg/fit.yaml``).

    iterations: Adam steps (250).  lr_rotation / lr_translation / lr_scale: Adam learning rates.
    optimise_scale: also fit a scale (off, as in the release).  icp_iterations: at most this many (10).
    human_threshold / object_threshold: contact points for the initialisation (p > 0.5 / p > 0.3).
    weight_mask / weight_centroid / weight_contact: the energy's weights (5, 1e-4, 10).
    sigma_ndc: soft-silhouette sharpness in squared NDC units (pytorch3d's, 1e-4 in the release).
    negligible: faces are drawn where their soft coverage exceeds this (the release's blur radius
        ``log(1 / 1e-4 - 1) * sigma`` is 1e-4).
    render_size: longest side of the fit's renders in pixels; None renders at the image's size (the
        release renders at its input size). Smaller is faster; the pixel terms then use render pixels.
    cull_backfaces: rasterize only front faces when the object is closed and outward-wound (checked; other
        meshes draw both): the silhouette is the same (a closed mesh's front faces cover its projection), at
        half the rasterization.
    occlusion: hide the object where the body is in front (the paper's depth render).
    frames: how many poses to keep for the optimisation's animation (evenly spaced, plus the last).
    """

    iterations: int = 250
    lr_rotation: float = 5e-2
    lr_translation: float = 1e-2
    lr_scale: float = 1e-2
    optimise_scale: bool = False
    icp_iterations: int = 10
    human_threshold: float = 0.5
    object_threshold: float = 0.3
    weight_mask: float = 5.0
    weight_centroid: float = 1e-4
    weight_contact: float = 10.0
    sigma_ndc: float = 1e-4
    negligible: float = 1e-4
    render_size: int | None = None
    cull_backfaces: bool = True
    occlusion: bool = True
    frames: int = 25

    def __post_init__(self):
        if not 0 <= self.iterations <= 10_000 or not 0 <= self.icp_iterations <= 100:
            raise InputError("iterations must be in [0, 10000] and icp_iterations in [0, 100]")
        if self.render_size is not None and not 16 <= self.render_size <= 4096:
            raise InputError(f"render_size must be 16-4096 pixels, got {self.render_size}")
        for name in ("lr_rotation", "lr_translation", "lr_scale", "sigma_ndc"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be positive")


@dataclass(frozen=True)
class HoiFit:
    """One fit's result. Arrays are float64 numpy, in the image's OpenCV camera frame, metres.

    method: ``METHOD`` or ``BASELINE_METHOD``.
    R (3, 3), t (3,), s: the object pose, ``x_cam = s * (object_canonical @ R) + t``.
    object_canonical (Vo, 3): the object centred on its vertex mean with y and z negated.
    object_vertices (Vo, 3): the posed object.  object_faces (Fo, 3).
    human_vertices (Vh, 3), human_faces (Fh, 3), human_topology: the fixed body.
    camera: intrinsics at the image size; image_size (H, W); render_size (h, w) of the fit's renders.
    init_R / init_t: the pose after stages 2-3.  icp_rmse: matched rmse per ICP iteration (metres).
    icp_kept: whether ICP's pose started the Adam stage (it must not score worse than the start on E's image terms).
    losses: name -> (iterations,) history of ``total``, ``mask``, ``centroid``, ``contact``.
    iou: hard IoU of the final visible silhouette with the mask, at the render size.
    frames (K, Vo, 3): posed object along the optimisation (for the animation); frame_steps (K,).
    stage_seconds: stage name -> seconds.  sources: input name -> where it came from.
    warnings: plain-words notes (e.g. ``NO_OVERLAP``).
    """

    method: str
    R: np.ndarray
    t: np.ndarray
    s: float
    object_canonical: np.ndarray
    object_vertices: np.ndarray
    object_faces: np.ndarray
    human_vertices: np.ndarray
    human_faces: np.ndarray
    human_topology: str
    camera: Intrinsics
    image_size: tuple[int, int]
    render_size: tuple[int, int]
    init_R: np.ndarray
    init_t: np.ndarray
    icp_rmse: tuple[float, ...]
    icp_kept: bool
    losses: Mapping[str, np.ndarray]
    iou: float
    frames: np.ndarray
    frame_steps: np.ndarray
    stage_seconds: Mapping[str, float]
    sources: Mapping[str, str]
    warnings: tuple[str, ...] = ()

    @property
    def is_baseline(self) -> bool:
        return self.method == BASELINE_METHOD


# --- energies: pure functions of tensors ----------------------------------------------------------------------


def soft_iou(rendered: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """True soft IoU ``sum(a m) / sum(a + m - a m)`` (1 for identical binary masks)."""
    intersection = (rendered * mask).sum()
    return intersection / (rendered + mask - rendered * mask).sum().clamp(min=1e-6)


def mask_centroid(weights: torch.Tensor) -> torch.Tensor:
    """(row, col) weighted mean pixel of an (H, W) mask."""
    rows = torch.arange(weights.shape[0], dtype=weights.dtype, device=weights.device)
    cols = torch.arange(weights.shape[1], dtype=weights.dtype, device=weights.device)
    total = weights.sum().clamp(min=1e-9)
    return torch.stack([(weights.sum(1) * rows).sum() / total, (weights.sum(0) * cols).sum() / total])


def rendered_centroid(rendered: torch.Tensor, screen: torch.Tensor) -> torch.Tensor:
    """The rendered silhouette's (row, col) centroid; when nothing is visible (the object left the image
    or hides behind the body), the projected vertex mean, so the term still pulls and never divides by 0."""
    fallback = torch.stack([screen[:, 1].mean(), screen[:, 0].mean()])
    if float(rendered.detach().sum()) < 1e-3:
        return fallback
    return mask_centroid(rendered)


def contact_distance(human: torch.Tensor, p_human: torch.Tensor, obj: torch.Tensor, p_object: torch.Tensor,
                     chunk: int = 4096) -> torch.Tensor:
    """``sum_ij d_ij p_i p_j / sum_ij p_i p_j`` over all human x object vertex pairs (Euclidean d).

    Pairs with a zero probability add nothing to either sum, so only vertices with p > 0 are paired
    (exact, and what keeps the all-pairs term affordable).
    """
    keep_h, keep_o = p_human > 0, p_object > 0
    human, p_human, obj, p_object = human[keep_h], p_human[keep_h], obj[keep_o], p_object[keep_o]
    numerator = human.new_zeros(())
    for start in range(0, len(human), chunk):
        distances = torch.cdist(human[start:start + chunk], obj)
        numerator = numerator + (p_human[start:start + chunk, None] * distances * p_object[None]).sum()
    return numerator / (p_human.sum() * p_object.sum()).clamp(min=1e-12)


@dataclass(frozen=True)
class Energy:
    total: torch.Tensor
    terms: dict = field(default_factory=dict)


def energy(rendered, mask, screen, target_centroid, posed, contact_data, config: FitConfig) -> Energy:
    """E = w_m (1 - soft IoU) + w_c |centroid|^2 + w_k contact distance (the last only with contacts)."""
    mask_term = 1 - soft_iou(rendered, mask)
    centroid_term = ((rendered_centroid(rendered, screen) - target_centroid) ** 2).sum()
    total = config.weight_mask * mask_term + config.weight_centroid * centroid_term
    terms = {"mask": mask_term, "centroid": centroid_term}
    if contact_data is not None:
        human, p_human, index, p_object = contact_data
        contact_term = contact_distance(human, p_human, posed[index], p_object)
        total = total + config.weight_contact * contact_term
        terms["contact"] = contact_term
    return Energy(total, terms)


# --- stages --------------------------------------------------------------------------------------------------


def canonical_object(obj: ObjectGeometry) -> np.ndarray:
    """(V, 3) the object centred on its vertex mean, y and z negated (the release's object frame)."""
    vertices = obj.vertices.astype(np.float64)
    return (vertices - vertices.mean(0)) @ TO_CAMERA_FRAME


def render_setup(image_size, camera: Intrinsics, render_size: int | None) -> tuple[tuple[int, int], Intrinsics, float]:
    height, width = image_size
    factor = 1.0 if render_size is None else render_size / max(height, width)
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    return size, camera.scaled(size[1] / width) if factor != 1.0 else camera, factor


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    tensor = torch.as_tensor(mask, dtype=torch.float64)[None, None]
    if tuple(mask.shape) == tuple(size):
        return tensor[0, 0]
    return torch.nn.functional.interpolate(tensor, size=size, mode="area")[0, 0]


def initial_translation(mask: np.ndarray, depth: float, camera: Intrinsics) -> np.ndarray:
    """Stage 2: the mask's centroid pixel, back-projected at ``depth``."""
    rows, cols = np.nonzero(mask)
    return back_project(rows.mean(), cols.mean(), depth, camera)


def _contact_points(vertices: np.ndarray, faces: np.ndarray, probabilities: np.ndarray, threshold: float):
    tensor = torch.as_tensor(vertices, dtype=torch.float64)
    normals = vertex_normals(tensor, torch.as_tensor(faces))
    keep = torch.as_tensor(probabilities > threshold)
    return tensor[keep], normals[keep]


def closed_and_outward(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Every edge shared by exactly two faces in opposite directions, and a positive enclosed volume: then
    the front faces alone cover the silhouette's extent and back faces may be culled."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    if len(np.unique(edges, axis=0)) != len(edges):
        return False
    reverse = {tuple(edge) for edge in edges[:, ::-1].tolist()}
    if any(tuple(edge) not in reverse for edge in edges.tolist()):
        return False
    corners = vertices[faces]
    return float(np.einsum("ij,ij->i", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])).sum()) > 0


def hard_iou(rendered: torch.Tensor, mask: torch.Tensor) -> float:
    a, m = rendered >= 0.5, mask >= 0.5
    union = (a | m).sum()
    return float((a & m).sum() / union) if union else 0.0


def _keep_frame(step: int, iterations: int, frames: int) -> bool:
    if frames <= 1 or iterations == 0:
        return step == iterations
    every = max(1, math.ceil(iterations / (frames - 1)))
    return step % every == 0 or step == iterations


def fit_object(body: BodyInput, obj: ObjectGeometry, mask, contacts: Contacts | None, config: FitConfig = FitConfig(),
               *, camera: Intrinsics | None = None, image_size=None, init_R=None, sources: Mapping[str, str] | None = None,
               progress: ProgressFn | None = None, device=None) -> HoiFit:
    """Fit the object's pose (see the module docstring). ``contacts=None`` runs the silhouette-only baseline.

    mask: (H, W) the image's object mask; ``image_size`` defaults to its shape. camera: defaults to the body
    file's, else ``Intrinsics.default``. init_R: the starting rotation (3, 3), default identity (the object
    upright in the camera frame).
    """
    report = progress or (lambda fraction, message: None)
    device = torch.device(device or "cpu")
    if not obj.is_mesh:
        raise InputError(f"the object {obj.name!r} has no faces (a point cloud); the silhouette fit needs a mesh")
    image_size = tuple(int(v) for v in (image_size or np.asarray(mask).shape[:2]))
    mask = check_mask(mask, image_size)
    camera = camera or body.camera or Intrinsics.default(image_size)
    baseline = contacts is None
    if not baseline:
        check_contacts(contacts, body, len(obj.vertices), human_threshold=config.human_threshold,
                       object_threshold=config.object_threshold)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    dtype = torch.float32

    # 1. camera: render size, scaled intrinsics, target mask, the body's depth for occlusion
    report(0.0, "stage 1/4: camera and the body's depth")
    render_size, render_camera, _ = render_setup(image_size, camera, config.render_size)
    target = resize_mask(mask, render_size).to(device, dtype)
    target_centroid = mask_centroid(target)
    human = torch.as_tensor(body.vertices, dtype=dtype, device=device)
    human_faces = torch.as_tensor(np.array(body.faces), device=device)
    occluder = depth_map(project(human, render_camera)[None], human_faces, render_size) if config.occlusion else None
    sigma = release_sigma_pixels(render_size, config.sigma_ndc)
    canonical = canonical_object(obj)
    options = {"negligible": config.negligible, "cull_backfaces": config.cull_backfaces and closed_and_outward(canonical, np.asarray(obj.faces))}
    seconds["camera"] = time.perf_counter() - clock

    # 2. translation from the mask centroid at the mean depth of the human contacts (or of the body)
    clock = time.perf_counter()
    report(0.05, "stage 2/4: translation from the mask centroid")
    if baseline:
        depth = float(body.vertices[:, 2].mean())
    else:
        depth = float(body.vertices[contacts.human > config.human_threshold, 2].mean())
    R = np.eye(3) if init_R is None else np.asarray(init_R, dtype=np.float64)
    t = initial_translation(mask, depth, camera) - canonical.mean(0) @ R
    seconds["translation"] = time.perf_counter() - clock
    warnings: list[str] = []

    # 4. Adam: render and compare, with the contacts anchoring the object to the body
    log_scale = torch.zeros((), dtype=dtype, device=device, requires_grad=config.optimise_scale)
    points = torch.as_tensor(canonical, dtype=dtype, device=device)
    faces = MeshEdges.from_faces(torch.as_tensor(np.array(obj.faces)), len(canonical)).to(device)
    contact_data = None
    if not baseline:
        p_human = torch.as_tensor(contacts.human, dtype=dtype, device=device)
        index = torch.nonzero(torch.as_tensor(contacts.object > 0)).squeeze(1).to(device)
        contact_data = (human, p_human, index, torch.as_tensor(contacts.object, dtype=dtype, device=device)[index])
    history = {name: [] for name in ("total", "mask", "centroid") + (() if baseline else ("contact",))}
    frames, frame_steps = [], []

    def render(rotation, shift, scale):
        posed = apply_pose(points, rotation, shift, scale)
        screen = project(posed, render_camera)
        return posed, screen, visible_soft_silhouette(screen[None], faces, render_size, sigma, occluder, **options)[0]

    def image_score(rotation, shift) -> float:
        """The energy's image terms only: judging ICP by the contact term it has just minimised is circular."""
        with torch.no_grad():
            rotation = torch.as_tensor(rotation, dtype=dtype, device=device)
            posed, screen, rendered = render(rotation, torch.as_tensor(shift, dtype=dtype, device=device), 1.0)
            return float(energy(rendered, target, screen, target_centroid, posed, None, config).total)

    # 3. ICP: object contacts snapped onto human contacts (kept when the fit's energy agrees it helps)
    clock = time.perf_counter()
    icp_rmse: tuple[float, ...] = ()
    icp_kept = False
    if not baseline and config.icp_iterations > 0:
        report(0.1, "stage 3/4: ICP on the contacts")
        object_points, object_normals = _contact_points(canonical, obj.faces, contacts.object, config.object_threshold)
        human_points, human_normals = _contact_points(body.vertices, body.faces, contacts.human, config.human_threshold)
        icp = contact_icp(object_points, object_normals, human_points, human_normals,
                          torch.as_tensor(R), torch.as_tensor(t), max_iterations=config.icp_iterations)
        icp_rmse = icp.rmse
        if image_score(icp.R.numpy(), icp.t.numpy()) <= image_score(R, t):
            R, t, icp_kept = icp.R.numpy(), icp.t.numpy(), True
    init_R, init_t = R.copy(), t.copy()
    seconds["icp"] = time.perf_counter() - clock
    clock = time.perf_counter()
    six = matrix_to_rotation_6d(torch.as_tensor(R, dtype=dtype, device=device)).clone().requires_grad_(True)
    translation = torch.as_tensor(t, dtype=dtype, device=device).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([{"params": [six], "lr": config.lr_rotation},
                                  {"params": [translation], "lr": config.lr_translation}]
                                 + ([{"params": [log_scale], "lr": config.lr_scale}] if config.optimise_scale else []))

    for step in range(config.iterations + 1):
        rotation = rotation_6d_to_matrix(six)
        posed, screen, rendered = render(rotation, translation, log_scale.exp())
        if step == 0 and float((rendered.detach() * target).sum()) < 1e-6:
            warnings.append(NO_OVERLAP + " (at the initial pose)")
        if _keep_frame(step, config.iterations, config.frames):
            frames.append(posed.detach().cpu().numpy().astype(np.float64))
            frame_steps.append(step)
        if step == config.iterations:
            break
        result = energy(rendered, target, screen, target_centroid, posed, contact_data, config)
        if not torch.isfinite(result.total):
            raise RuntimeError(f"the fit's energy became non-finite at step {step}; terms {result.terms}")
        optimiser.zero_grad()
        result.total.backward()
        optimiser.step()
        history["total"].append(float(result.total.detach()))
        for name, value in result.terms.items():
            history[name].append(float(value.detach()))
        if step % 10 == 0:
            report(0.15 + 0.8 * step / max(config.iterations, 1),
                   f"stage 4/4: Adam {step}/{config.iterations}, energy {float(result.total.detach()):.4f}")
    seconds["adam"] = time.perf_counter() - clock

    final_R = rotation.detach().cpu().numpy().astype(np.float64)
    final_t = translation.detach().cpu().numpy().astype(np.float64)
    final_s = float(log_scale.exp())
    iou = hard_iou(rendered.detach(), target)
    if iou == 0.0:
        warnings.append(NO_OVERLAP + " (after the fit)")
    report(1.0, "done")
    freeze = lambda array: _read_only(np.asarray(array, dtype=np.float64))
    return HoiFit(
        method=BASELINE_METHOD if baseline else METHOD, R=freeze(final_R), t=freeze(final_t), s=final_s,
        object_canonical=freeze(canonical), object_vertices=freeze(final_s * canonical @ final_R + final_t),
        object_faces=_read_only(np.asarray(obj.faces)), human_vertices=freeze(body.vertices),
        human_faces=_read_only(np.asarray(body.faces)), human_topology=body.topology, camera=camera,
        image_size=image_size, render_size=render_size, init_R=freeze(init_R), init_t=freeze(init_t),
        icp_rmse=icp_rmse, icp_kept=icp_kept, losses=MappingProxyType({k: freeze(v) for k, v in history.items()}), iou=iou,
        frames=freeze(np.stack(frames)), frame_steps=_read_only(np.asarray(frame_steps)),
        stage_seconds=MappingProxyType(seconds), sources=MappingProxyType(dict(sources or {})),
        warnings=tuple(warnings))


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.array(array)
    array.flags.writeable = False
    return array


def with_baseline(body, obj, mask, contacts, config: FitConfig = FitConfig(), **kwargs) -> tuple[HoiFit, HoiFit]:
    """The method and its silhouette-only baseline on the same inputs (a perceptual study's pair)."""
    return (fit_object(body, obj, mask, contacts, config, **kwargs),
            fit_object(body, obj, mask, None, config, **kwargs))


if __name__ == "__main__":
    import sys

    from engine.hoi.cli import main

    sys.exit(main())
