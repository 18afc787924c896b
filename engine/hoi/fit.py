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
       Multi-start (ours; the release starts once): the stage-3 pose and its turns by 45, -45 and 180 degrees
       about the contact normal through the contact patch (the baseline: the camera's vertical through the
       object's centre), the turns a contact leaves free and the flips a silhouette cannot tell apart; each
       takes 25 probe steps and the lowest energy continues to 250 (``FitConfig.start_angles``).

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
    start_angles: the multi-start, in degrees: Adam starts from the stage-3 pose turned by each angle about
        an axis (the contact normal through the object's contact patch; for the baseline, the camera's
        vertical through the object's centre), runs ``probe_iterations`` steps from each, and the start with
        the lowest energy continues to ``iterations`` (its probe steps count). ``(0.0,)`` is a single start.
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
    start_angles: tuple[float, ...] = (0.0, 45.0, -45.0, 180.0)
    probe_iterations: int = 25

    def __post_init__(self):
        if not 0 <= self.iterations <= 10_000 or not 0 <= self.icp_iterations <= 100:
            raise InputError("iterations must be in [0, 10000] and icp_iterations in [0, 100]")
        if self.render_size is not None and not 16 <= self.render_size <= 4096:
            raise InputError(f"render_size must be 16-4096 pixels, got {self.render_size}")
        if not 1 <= len(self.start_angles) <= 16 or not all(math.isfinite(float(a)) for a in self.start_angles):
            raise InputError(f"start_angles must be 1-16 finite angles in degrees, got {self.start_angles!r}")
        if not 1 <= self.probe_iterations <= 1000:
            raise InputError(f"probe_iterations must be in [1, 1000], got {self.probe_iterations}")
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
    stage_seconds: stage name -> seconds (camera, translation, icp, starts: the multi-start's probes, adam: the
    rest of the chosen start's descent).  sources: input name -> where it came from.
    warnings: plain-words notes (e.g. ``NO_OVERLAP``).
    start_energies (S,): each multi-start's energy after its probe steps; start_index: the one that continued
    (its pose after stages 2-3 turned by ``FitConfig.start_angles[start_index]``).
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
    start_energies: tuple[float, ...] = ()
    start_index: int = 0

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


def start_poses(R: np.ndarray, t: np.ndarray, pivot: np.ndarray, axis: np.ndarray, angles) -> list[tuple[np.ndarray, np.ndarray]]:
    """The multi-start: the pose (R, t) turned by each angle (degrees) about ``axis`` through ``pivot``
    (camera frame; the pivot stays in place). Row-vector poses: with Q the turn, ``R' = R Q^T`` and
    ``t' = (t - pivot) Q^T + pivot``."""
    from scipy.spatial.transform import Rotation

    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    pivot = np.asarray(pivot, dtype=np.float64)
    poses = []
    for angle in angles:
        turn = Rotation.from_rotvec(np.radians(float(angle)) * axis).as_matrix()
        poses.append((np.asarray(R) @ turn.T, (np.asarray(t) - pivot) @ turn.T + pivot))
    return poses


def contact_axis(canonical: np.ndarray, faces, contacts: Contacts, body: BodyInput, config: FitConfig,
                 R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The multi-start's axis and pivot with contacts: the human contact patch's mean normal (p > the human
    threshold) through the object's posed contact patch centroid (p > the object threshold). When the normals
    cancel out (a patch around a handle), the camera's vertical."""
    _, normals = _contact_points(body.vertices, body.faces, contacts.human, config.human_threshold)
    points, _ = _contact_points(canonical, faces, contacts.object, config.object_threshold)
    mean = normals.mean(0).numpy()
    axis = mean / np.linalg.norm(mean) if np.linalg.norm(mean) > 0.3 else np.array([0.0, 1.0, 0.0])
    return axis, points.numpy().mean(0) @ R + t


class Descent:
    """One Adam descent over the 6D rotation, the translation and (optionally) the log scale, resumable:
    the multi-start advances each start for the probe steps, then the best one to the full count.

    After ``advance(objective, until)``: ``energy`` at the pose reached (its step ``until``), ``rendered``
    there, ``history`` (one value per step taken, before its update), ``frames`` / ``frame_steps``.
    """

    def __init__(self, R: np.ndarray, t: np.ndarray, config: FitConfig, names, target: torch.Tensor, dtype, device):
        self.config, self.target = config, target
        self.six = matrix_to_rotation_6d(torch.as_tensor(R, dtype=dtype, device=device)).clone().requires_grad_(True)
        self.translation = torch.as_tensor(t, dtype=dtype, device=device).clone().requires_grad_(True)
        self.log_scale = torch.zeros((), dtype=dtype, device=device, requires_grad=config.optimise_scale)
        self.optimiser = torch.optim.Adam(
            [{"params": [self.six], "lr": config.lr_rotation}, {"params": [self.translation], "lr": config.lr_translation}]
            + ([{"params": [self.log_scale], "lr": config.lr_scale}] if config.optimise_scale else []))
        self.history = {name: [] for name in names}
        self.frames, self.frame_steps = [], []
        self.step, self.energy, self.probe_energy = 0, float("inf"), float("inf")
        self.rotation = self.rendered = None
        self.no_overlap_at_start = False

    def advance(self, objective, until: int, on_step=None) -> None:
        """Take Adam steps until ``self.step == until``; then evaluate (no update) the pose reached."""
        iterations, frames = self.config.iterations, self.config.frames
        while True:
            rotation = rotation_6d_to_matrix(self.six)
            posed, rendered, result = objective(rotation, self.translation, self.log_scale.exp())
            if self.step == 0 and float((rendered.detach() * self.target).sum()) < 1e-6:
                self.no_overlap_at_start = True
            if _keep_frame(self.step, iterations, frames) and (not self.frame_steps or self.frame_steps[-1] != self.step):
                self.frames.append(posed.detach().cpu().numpy().astype(np.float64))
                self.frame_steps.append(self.step)
            if not torch.isfinite(result.total):
                raise RuntimeError(f"the fit's energy became non-finite at step {self.step}; terms {result.terms}")
            if self.step >= until:
                self.energy, self.rotation, self.rendered = float(result.total.detach()), rotation.detach(), rendered.detach()
                if self.probe_energy == float("inf"):
                    self.probe_energy = self.energy
                return
            self.optimiser.zero_grad()
            result.total.backward()
            self.optimiser.step()
            self.history["total"].append(float(result.total.detach()))
            for name, value in result.terms.items():
                self.history[name].append(float(value.detach()))
            if on_step is not None:
                on_step(self.step, float(result.total.detach()))
            self.step += 1


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
    points = torch.as_tensor(canonical, dtype=dtype, device=device)
    faces = MeshEdges.from_faces(torch.as_tensor(np.array(obj.faces)), len(canonical)).to(device)
    contact_data = None
    if not baseline:
        p_human = torch.as_tensor(contacts.human, dtype=dtype, device=device)
        index = torch.nonzero(torch.as_tensor(contacts.object > 0)).squeeze(1).to(device)
        contact_data = (human, p_human, index, torch.as_tensor(contacts.object, dtype=dtype, device=device)[index])

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

    # 4. Adam from each start pose for a few probe steps ("starts"); the lowest energy continues ("adam")
    clock = time.perf_counter()
    if baseline:
        axis, pivot = np.array([0.0, 1.0, 0.0]), canonical.mean(0) @ R + t
    else:
        axis, pivot = contact_axis(canonical, obj.faces, contacts, body, config, R, t)
    starts = start_poses(R, t, pivot, axis, config.start_angles)

    def objective(rotation, shift, scale):
        posed, screen, rendered = render(rotation, shift, scale)
        return posed, rendered, energy(rendered, target, screen, target_centroid, posed, contact_data, config)

    def progress_of(label: str):
        def on_step(step: int, value: float) -> None:
            if step % 10 == 0:
                report(0.15 + 0.8 * step / max(config.iterations, 1),
                       f"stage 4/4: Adam {label}{step}/{config.iterations}, energy {value:.4f}")
        return on_step

    names = ("total", "mask", "centroid") + (() if baseline else ("contact",))
    runs = [Descent(start_R, start_t, config, names, target, dtype, device) for start_R, start_t in starts]
    chosen = runs[0]
    if len(runs) > 1:
        probe = min(config.probe_iterations, config.iterations)
        for number, run in enumerate(runs):
            run.advance(objective, probe, progress_of(f"start {number + 1}/{len(runs)}, step "))
        chosen = min(runs, key=lambda run: run.energy)
    seconds["starts"] = time.perf_counter() - clock
    clock = time.perf_counter()
    chosen.advance(objective, config.iterations, progress_of(f"start {runs.index(chosen) + 1} kept, step " if len(runs) > 1 else ""))
    if chosen.no_overlap_at_start:
        warnings.append(NO_OVERLAP + " (at the initial pose)")
    rotation, translation, log_scale, rendered = chosen.rotation, chosen.translation, chosen.log_scale, chosen.rendered
    history, frames, frame_steps = chosen.history, chosen.frames, chosen.frame_steps
    start_energies = tuple(run.probe_energy for run in runs)
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
        warnings=tuple(warnings), start_energies=start_energies, start_index=runs.index(chosen))


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
