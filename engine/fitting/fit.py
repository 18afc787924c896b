"""Fitting a body to 2D keypoints in one or more calibrated views (SMPLify style).

Variables (all in the world frame of the cameras, metres)
    ``transl`` (3,), ``global_orient`` as a 6D rotation (``rotations.rotation_6d_to_matrix``),
    ``body_pose`` as axis-angle (21 or 23 joints x 3) or, when a VPoser is given, its latent (32,),
    ``betas``, and optionally one logit per view (``view_logits``; GenZI's view scores s = sigmoid).

Energies (``engine.fitting.energies``), each with a weight per stage in ``StageConfig.weights``
    ``reprojection``    Geman-McClure on pixel residuals, weighted by confidence and view weights;
    ``pose_prior``      VPoser ``sum z^2``, or the open-body Gaussian over the pose;
    ``angle_prior``     squared hinge outside the joint-limit table (``priors.JOINT_LIMITS_DEG``);
    ``shape_prior``     ``sum (w beta)^2``;
    ``view_selection``  ``relu(min_views - sum s)`` (only with learned view weights).
    Callers add their own terms (scene penetration, contact, ...) through ``extra_terms``: a mapping
    ``name -> ExtraTerm(fn, weights_per_stage)`` or ``name -> (fn, weights_per_stage)``, where
    ``fn(state: FitState) -> scalar tensor``. A weight is a float, or ``(start, end)`` interpolated
    linearly over the stage's iterations (GenZI's schedule); a term whose weight is 0 (or (0, 0)) in a
    stage is not evaluated there. Terms that need only some vertices name them once with
    ``fit_body(vertex_subset=ids)`` and read ``state.subset_vertices``: those are posed together with the
    joints and keypoint sites (one skinning of a few vertices per iteration), while ``state.vertices``
    (the whole mesh, skinned every iteration) is only built for terms with ``needs_vertices=True``.

The loop (``fit_body``) runs numbered stages; Adam (AdamW when ``weight_decay`` > 0) is rebuilt at
every stage over that stage's variables. Iterations whose loss or gradient is not finite are skipped.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Iterator, Mapping, Sequence, Union

import numpy as np
import torch

from engine.body.model import BodyModel
from engine.body.skeleton import BODY_JOINT_NAMES
from engine.errors import InputError
from engine.fitting import energies
from engine.fitting.kinematics import SiteModel
from engine.fitting.keypoints import Keypoints2D, KeypointSites, keypoint_sites
from engine.fitting.priors import NUM_PRIOR_JOINTS, OpenBodyPrior, VPoser
from engine.fitting.rotations import (axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_rotation_6d,
                                      rotation_6d_to_matrix, rotation_about_y)
from engine.render.cameras import OpenCVCamera

Weight = Union[float, tuple[float, float]]
VARIABLES = ("transl", "global_orient", "body_pose", "betas", "view_logits")
BUILTIN_ENERGIES = ("reprojection", "pose_prior", "angle_prior", "shape_prior", "view_selection")
TORSO_JOINTS = frozenset({"pelvis", "left_hip", "right_hip", "spine1", "spine2", "spine3", "neck",
                          "left_collar", "right_collar", "left_shoulder", "right_shoulder"})


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class StageConfig:
    """One stage: ``iterations`` Adam steps at ``lr`` over the ``optimise`` variables.

    weights: energy name -> Weight (missing names weigh 0); extra terms carry their own weights.
    keypoints: ``all`` or ``torso`` (only torso keypoints feed the reprojection term).
    """

    name: str
    iterations: int
    lr: float
    optimise: tuple[str, ...]
    weights: Mapping[str, Weight]
    keypoints: str = "all"

    def __post_init__(self):
        object.__setattr__(self, "weights", _frozen(self.weights))
        unknown = set(self.optimise) - set(VARIABLES)
        if unknown:
            raise InputError(f"stage {self.name!r} optimises unknown variables {sorted(unknown)}; known: {VARIABLES}")
        unknown = set(self.weights) - set(BUILTIN_ENERGIES)
        if unknown:
            raise InputError(f"stage {self.name!r} weighs unknown energies {sorted(unknown)}; known: {BUILTIN_ENERGIES} "
                             "(pass other terms as extra_terms)")
        if self.keypoints not in ("all", "torso"):
            raise InputError(f"stage keypoints must be 'all' or 'torso', got {self.keypoints!r}")
        if not (isinstance(self.iterations, int) and self.iterations >= 0 and self.lr > 0):
            raise InputError(f"stage {self.name!r} needs iterations >= 0 and lr > 0")


DEFAULT_STAGES: tuple[StageConfig, ...] = (
    StageConfig("1. camera and torso", 60, 0.05, ("transl", "global_orient"),
                {"reprojection": 1.0}, keypoints="torso"),
    StageConfig("2. pose, strong priors", 120, 0.03, ("transl", "global_orient", "body_pose", "betas"),
                {"reprojection": 1.0, "pose_prior": 40.0, "angle_prior": 1e4, "shape_prior": 100.0}),
    StageConfig("3. pose, weak priors", 120, 0.01, ("transl", "global_orient", "body_pose", "betas"),
                {"reprojection": 1.0, "pose_prior": (10.0, 2.0), "angle_prior": 1e4, "shape_prior": 10.0}),
)


@dataclass(frozen=True)
class FitConfig:
    """Every knob of the fit.

    stages: the schedule (``DEFAULT_STAGES``: torso, then pose with strong and weak priors).
    rho: Geman-McClure scale in pixels. GenZI divides pixels by 512 and uses rho 0.2: the same robust
        shape is rho = 102.4 here, with every energy 512^2 times larger (scale its other weights to match).
    weight_decay: > 0 switches Adam to AdamW (GenZI uses 0.01).
    learn_view_weights: optimise one logit per view (GenZI's view scores), starting at s = 0.5.
    min_views: the view-selection threshold tau.
    shape_weights: per-beta w of the shape prior (None: all 1).
    orientation_hypotheses: upright starting orientations tried side by side (facing the first camera,
        then turned by 360/n degrees each); ignored when ``BodyInit.global_orient`` is given.
    select_after: the stage number (1-based) after which only the best hypothesis continues.
    """

    stages: tuple[StageConfig, ...] = DEFAULT_STAGES
    rho: float = 100.0
    weight_decay: float = 0.0
    learn_view_weights: bool = False
    min_views: float = 3.0
    shape_weights: tuple[float, ...] | None = None
    orientation_hypotheses: int = 4
    select_after: int = 2

    def __post_init__(self):
        if not self.stages:
            raise InputError("a fit needs at least one stage")
        if self.orientation_hypotheses < 1 or self.select_after < 1:
            raise InputError("orientation_hypotheses and select_after must be at least 1")
        if self.rho <= 0:
            raise InputError("rho must be positive")


@dataclass(frozen=True)
class BodyInit:
    """Optional starting values (numpy or lists). Missing ones are estimated (translation, orientation) or zero."""

    transl: np.ndarray | None = None
    global_orient: np.ndarray | None = None  # (3,) axis-angle
    body_pose: np.ndarray | None = None  # (num_body_joints * 3,) axis-angle; encoded when a VPoser is used
    betas: np.ndarray | None = None
    latent: np.ndarray | None = None


@dataclass(frozen=True)
class FitState:
    """What every energy sees at one iteration (tensors carry gradients).

    joints: (22, 3) world.  keypoints_3d: (K, 3).  projected: (N, K, 2) pixels.
    vertices: (V, 3) world, or None when no active term of this stage needs them.
    subset_vertices: (S, 3) world, the vertices ``fit_body(vertex_subset=...)`` named, or None.
    transl: (3,).  global_orient: (3, 3) rotation matrix.  body_pose: (num_body_joints * 3,) axis-angle.
    betas: (num_betas,).  latent: (latentD,) or None.  view_weights: (N,) raw scores (sum not normalised).
    """

    stage: int
    iteration: int
    body: BodyModel
    cameras: OpenCVCamera
    joints: torch.Tensor
    keypoints_3d: torch.Tensor
    projected: torch.Tensor
    vertices: torch.Tensor | None
    subset_vertices: torch.Tensor | None
    transl: torch.Tensor
    global_orient: torch.Tensor
    body_pose: torch.Tensor
    betas: torch.Tensor
    latent: torch.Tensor | None
    view_weights: torch.Tensor


@dataclass(frozen=True)
class ExtraTerm:
    """A caller's energy: ``fn(state) -> scalar``, one Weight per stage, and whether it needs all vertices."""

    fn: Callable[[FitState], torch.Tensor]
    weights: tuple[Weight, ...]
    needs_vertices: bool = True


@dataclass(frozen=True)
class StageHistory:
    """Loss per iteration of one stage: ``total`` (T,) and ``terms[name]`` (T,), weighted."""

    name: str
    total: np.ndarray
    terms: Mapping[str, np.ndarray]
    skipped: int = 0


@dataclass(frozen=True)
class BodyFit:
    """A fitted body.

    topology: the body's topology id.  transl: (3,).  global_orient: (3,) axis-angle.
    body_pose: (num_body_joints * 3,) axis-angle.  betas: (num_betas,).  latent: (latentD,) or None.
    joints: (22, 3) world.  vertices: (V, 3) world.  keypoints_3d: (K, 3) world, in ``layout`` order.
    projected: (N, K, 2) pixels.  reprojection_error_px: (N, K).  view_weights: (N,) normalised to sum 1.
    history: one ``StageHistory`` per stage.  layout: keypoint layout.  prior: ``vposer`` or ``open-body``.
    """

    topology: str
    transl: np.ndarray
    global_orient: np.ndarray
    body_pose: np.ndarray
    betas: np.ndarray
    latent: np.ndarray | None
    joints: np.ndarray
    vertices: np.ndarray
    keypoints_3d: np.ndarray
    projected: np.ndarray
    reprojection_error_px: np.ndarray
    view_weights: np.ndarray
    history: tuple[StageHistory, ...]
    layout: str
    prior: str

    def body_params(self) -> dict[str, np.ndarray]:
        """Keyword arguments for ``BodyModel.forward`` (each with batch 1)."""
        return {name: getattr(self, name)[None] for name in ("betas", "body_pose", "global_orient", "transl")}


def photo_camera(image_size: tuple[int, int], focal_px: float | None = None, fov_deg: float = 60.0) -> OpenCVCamera:
    """The camera of one photo, in our Y-up world: at the origin, looking along -Z, image rows going down.

    ``R = diag(1, -1, -1)``, ``t = 0``, principal point at the image centre, focal ``focal_px`` or the one
    giving ``fov_deg`` across the longer side. A body in front of it sits at negative z; its
    coordinates in the OpenCV camera frame are ``diag(1, -1, -1) @ x``.
    """
    height, width = image_size
    if not (height > 0 and width > 0):
        raise InputError(f"image size must be positive, got {image_size}")
    focal = focal_px if focal_px is not None else max(height, width) / 2 / math.tan(math.radians(fov_deg) / 2)
    if not (math.isfinite(focal) and focal > 0):
        raise InputError("the focal length must be a positive number of pixels")
    K = torch.tensor([[[focal, 0.0, width / 2 - 0.5], [0.0, focal, height / 2 - 0.5], [0.0, 0.0, 1.0]]])
    return OpenCVCamera(K=K, R=torch.diag(torch.tensor([1.0, -1.0, -1.0]))[None], t=torch.zeros(1, 3))


@contextlib.contextmanager
def cpu_threads(count: int | None, device) -> Iterator[None]:
    """Run the block with ``count`` intra-op torch threads when ``device`` is the CPU (None: unchanged),
    restoring the previous count after. A fit's tensors are small (tens of joints, a few thousand
    vertices), so splitting each operation across threads costs more in synchronisation than it saves;
    on a shared machine it also makes every operation wait for the busiest core. The setting is
    process-wide while the block runs."""
    if count is None or torch.device(device).type != "cpu":
        yield
        return
    if not (isinstance(count, int) and count >= 1):
        raise InputError(f"the CPU thread count must be a positive integer, got {count!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def tqdm_progress(bar) -> Callable[[float, str], None]:
    """Adapt a ``tqdm`` bar (total 1.0 or any) to the ``progress(fraction, desc)`` callback."""
    def update(fraction: float, desc: str) -> None:
        bar.set_description_str(desc, refresh=False)
        bar.n = fraction * (bar.total or 1.0)
        bar.refresh()
    return update


# ---------------------------------------------------------------------------------- input checks
@dataclass(frozen=True)
class _Problem:
    """Checked inputs as tensors: keypoints (N, K, 2), confidence (N, K) with site weights folded in."""

    body: BodyModel
    cameras: OpenCVCamera
    sites: KeypointSites
    keypoints: torch.Tensor
    confidence: torch.Tensor
    torso: torch.Tensor
    site_model: SiteModel
    subset_size: int
    vposer: VPoser | None
    prior: OpenBodyPrior
    shape_weights: torch.Tensor | None


def _as_views(keypoints) -> list[Keypoints2D]:
    views = [keypoints] if isinstance(keypoints, Keypoints2D) else list(keypoints)
    if not views or not all(isinstance(view, Keypoints2D) for view in views):
        raise InputError("keypoints must be a Keypoints2D or a non-empty list of them (one per view)")
    if len({view.layout for view in views}) != 1:
        raise InputError("every view must use the same keypoint layout")
    return views


def _as_cameras(cameras, num_views: int, dtype, device) -> OpenCVCamera:
    if isinstance(cameras, OpenCVCamera):
        merged = cameras
    elif isinstance(cameras, Sequence) and cameras and all(isinstance(c, OpenCVCamera) for c in cameras):
        merged = OpenCVCamera(torch.cat([c.K for c in cameras]), torch.cat([c.R for c in cameras]),
                              torch.cat([c.t for c in cameras]))
    else:
        raise InputError("cameras must be an OpenCVCamera (batch of N) or a list of them")
    if len(merged) != num_views:
        raise InputError(f"{num_views} keypoint views but {len(merged)} cameras; give one camera per view")
    shapes = (merged.K.shape[1:], merged.R.shape[1:], merged.t.shape[1:])
    if shapes != ((3, 3), (3, 3), (3,)):
        raise InputError(f"camera K, R, t must be (N, 3, 3), (N, 3, 3), (N, 3); got {[tuple(s) for s in shapes]}")
    merged = OpenCVCamera(*(tensor.to(dtype=dtype, device=device) for tensor in (merged.K, merged.R, merged.t)))
    if not all(torch.isfinite(t).all() for t in (merged.K, merged.R, merged.t)):
        raise InputError("cameras contain NaN or inf")
    if (merged.K[:, 0, 0] <= 0).any() or (merged.K[:, 1, 1] <= 0).any():
        raise InputError("camera focal lengths must be positive")
    return merged


def _vertex_ids(vertex_subset, body: BodyModel) -> torch.Tensor:
    if vertex_subset is None:
        return torch.zeros(0, dtype=torch.long, device=body.device)
    ids = torch.as_tensor(np.asarray(vertex_subset)).to(body.device)
    if ids.dim() != 1 or ids.dtype not in (torch.int32, torch.int64) or len(ids) == 0:
        raise InputError("vertex_subset must be a non-empty 1-D array of vertex indices")
    if int(ids.min()) < 0 or int(ids.max()) >= body.num_vertices:
        raise InputError(f"vertex_subset indices must lie in [0, {body.num_vertices})")
    return ids.long()


def _prepare(body, keypoints, cameras, config: FitConfig, vposer, sites,
             vertex_subset=None) -> tuple[_Problem, list[Keypoints2D]]:
    if not isinstance(body, BodyModel):
        raise InputError("body must be a BodyModel from engine.body.load_body")
    views = _as_views(keypoints)
    dtype, device = body.template_dtype, body.device
    layout = views[0].layout
    if sites is None:
        rest = body.v_template.detach().cpu().numpy() if layout in ("coco17", "coco23") else None
        sites = keypoint_sites(layout, body.topology, rest)
    elif sites.layout != layout or sites.topology != body.topology:
        raise InputError(f"sites are for {sites.layout} on {sites.topology}, the fit is {layout} on {body.topology}")
    if config.shape_weights is not None and len(config.shape_weights) != body.num_betas:
        raise InputError(f"shape_weights has {len(config.shape_weights)} entries, the body has {body.num_betas} betas")
    as_tensor = lambda array: torch.as_tensor(np.asarray(array), dtype=dtype, device=device)
    confidence = torch.stack([as_tensor(v.confidence) for v in views]) * as_tensor(sites.weight)
    names = [BODY_JOINT_NAMES[j] if j >= 0 else "" for j in sites.joint.tolist()]
    torso = torch.tensor([name in TORSO_JOINTS for name in names], device=device)
    subset = _vertex_ids(vertex_subset, body)
    site_ids = torch.cat([torch.as_tensor(sites.vertex_ids, dtype=torch.long, device=device), subset])
    problem = _Problem(
        body=body, cameras=_as_cameras(cameras, len(views), dtype, device), sites=sites,
        keypoints=torch.stack([as_tensor(v.xy) for v in views]), confidence=confidence, torso=torso,
        site_model=SiteModel.build(body, site_ids), subset_size=len(subset), vposer=vposer,
        prior=OpenBodyPrior.default(dtype, device),
        shape_weights=None if config.shape_weights is None else as_tensor(config.shape_weights))
    return problem, views


def _check_extra_terms(extra_terms, config: FitConfig) -> dict[str, ExtraTerm]:
    terms = {}
    for name, term in (extra_terms or {}).items():
        if not isinstance(term, ExtraTerm):
            if not (isinstance(term, tuple) and len(term) == 2 and callable(term[0])):
                raise InputError(f"extra term {name!r} must be ExtraTerm(fn, weights) or (fn, weights)")
            term = ExtraTerm(term[0], tuple(term[1]))
        if name in BUILTIN_ENERGIES:
            raise InputError(f"extra term {name!r} clashes with a built-in energy")
        if len(term.weights) != len(config.stages):
            raise InputError(f"extra term {name!r} has {len(term.weights)} weights for {len(config.stages)} stages")
        terms[name] = term
    return terms


# ---------------------------------------------------------------------------------- the model
def _weighs(weight: Weight) -> bool:
    """Whether a term with this stage weight counts at all (0 and (0, 0) do not)."""
    return any(float(w) != 0.0 for w in (weight if isinstance(weight, (tuple, list)) else (weight,)))


def _weight_at(weight: Weight, step: int, iterations: int) -> float:
    if isinstance(weight, (tuple, list)):
        start, end = weight
        return float(start + (end - start) * step / max(iterations - 1, 1))
    return float(weight)


def _decoded_pose(problem: _Problem, pose_variable: torch.Tensor) -> torch.Tensor:
    """(B, num_body_joints * 3) axis-angle from the pose variable (the VPoser latent or the pose itself)."""
    if problem.vposer is None:
        return pose_variable
    decoded = problem.vposer.decode_axis_angle(pose_variable)
    missing = problem.body.num_body_joints * 3 - decoded.shape[1]
    return torch.nn.functional.pad(decoded, (0, missing)) if missing > 0 else decoded


@dataclass(frozen=True)
class _Posed:
    """The batch of the variables posed (B = hypotheses): ``body_pose`` (B, J*3) axis-angle, ``rotation``
    (B, 3, 3), ``joints`` (B, J+1, 3), ``keypoint_vertices`` (B, K, 3) the keypoint sites' vertices,
    ``subset`` (B, S, 3) the vertex subset or None, ``vertices`` (B, V, 3) or None."""

    body_pose: torch.Tensor
    rotation: torch.Tensor
    joints: torch.Tensor
    keypoint_vertices: torch.Tensor
    subset: torch.Tensor | None
    vertices: torch.Tensor | None


def _pose(problem: _Problem, variables: dict, need_vertices: bool) -> _Posed:
    """Joints, keypoint sites and the vertex subset of every hypothesis in one skinning call, placed rigidly."""
    body_pose = _decoded_pose(problem, variables["body_pose"])
    rotation = rotation_6d_to_matrix(variables["global_orient"])
    zero = torch.zeros_like(variables["transl"])
    joints, site_vertices = problem.site_model(variables["betas"], body_pose, zero, zero)
    pelvis = joints[:, :1]
    # the same rigid placement as BodyModel.forward's global_orient and transl
    place = lambda points: (points - pelvis) @ rotation.transpose(1, 2) + pelvis + variables["transl"][:, None]
    vertices = place(problem.body(betas=variables["betas"], body_pose=body_pose).vertices) if need_vertices else None
    joints, site_vertices = place(joints), place(site_vertices)
    keypoint_count = site_vertices.shape[1] - problem.subset_size
    return _Posed(body_pose, rotation, joints, site_vertices[:, :keypoint_count],
                  site_vertices[:, keypoint_count:] if problem.subset_size else None, vertices)


def _states(problem: _Problem, config: FitConfig, variables: dict, stage: int, iteration: int,
            need_vertices: bool) -> list[FitState]:
    """One ``FitState`` per orientation hypothesis (the batch of the variables), posed together."""
    body = problem.body
    posed = _pose(problem, variables, need_vertices)
    body_pose, rotation, joints, vertices, subset = (posed.body_pose, posed.rotation, posed.joints, posed.vertices,
                                                     posed.subset)
    keypoints_3d = problem.sites.gather(joints, posed.keypoint_vertices)
    view_weights = (torch.sigmoid(variables["view_logits"]) if config.learn_view_weights
                    else torch.ones_like(variables["view_logits"]))
    latent = variables["body_pose"] if problem.vposer is not None else None
    return [FitState(stage=stage, iteration=iteration, body=body, cameras=problem.cameras, joints=joints[b],
                     keypoints_3d=keypoints_3d[b], projected=energies.project_points(problem.cameras, keypoints_3d[b]),
                     vertices=None if vertices is None else vertices[b],
                     subset_vertices=None if subset is None else subset[b], transl=variables["transl"][b],
                     global_orient=rotation[b], body_pose=body_pose[b], betas=variables["betas"][b],
                     latent=None if latent is None else latent[b], view_weights=view_weights[b])
            for b in range(joints.shape[0])]


def _energies(problem: _Problem, config: FitConfig, stage: StageConfig, state: FitState,
              wanted=BUILTIN_ENERGIES) -> dict[str, torch.Tensor]:
    """The built-in energies named in ``wanted`` (unweighted); view selection only with learned view weights."""
    confidence = problem.confidence * problem.torso if stage.keypoints == "torso" else problem.confidence
    pose = state.body_pose[None]
    compute = {
        "reprojection": lambda: energies.reprojection_energy(state.projected, problem.keypoints, confidence, config.rho,
                                                             state.view_weights),
        "angle_prior": lambda: energies.joint_limit_energy(pose, problem.prior.lower, problem.prior.upper),
        "shape_prior": lambda: energies.shape_energy(state.betas[None], problem.shape_weights),
        "pose_prior": (lambda: energies.latent_energy(state.latent[None])) if problem.vposer is not None else
                      (lambda: energies.gaussian_pose_energy(pose, problem.prior.mean, problem.prior.std)),
    }
    if config.learn_view_weights and len(problem.cameras) >= config.min_views:
        compute["view_selection"] = lambda: energies.view_selection_energy(state.view_weights, config.min_views)
    return {name: compute[name]() for name in wanted if name in compute}


# ---------------------------------------------------------------------------------- initialisation
def _initial_variables(problem: _Problem, init: BodyInit, config: FitConfig) -> dict[str, torch.Tensor]:
    """Variables with a leading batch of orientation hypotheses (1 when ``init.global_orient`` is given)."""
    body, like = problem.body, problem.keypoints
    tensor = lambda value, width: torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=like.dtype,
                                                  device=like.device).reshape(1, width)
    pose_width = body.num_body_joints * 3
    identity = matrix_to_rotation_6d(torch.eye(3, dtype=like.dtype, device=like.device))[None]
    variables = {
        "transl": tensor(init.transl, 3) if init.transl is not None else like.new_zeros(1, 3),
        "global_orient": matrix_to_rotation_6d(axis_angle_to_matrix(tensor(init.global_orient, 3)))
        if init.global_orient is not None else identity,
        "betas": tensor(init.betas, body.num_betas) if init.betas is not None else like.new_zeros(1, body.num_betas),
        "view_logits": like.new_zeros(1, len(problem.cameras)),
    }
    pose = tensor(init.body_pose, pose_width) if init.body_pose is not None else like.new_zeros(1, pose_width)
    if problem.vposer is None:
        variables["body_pose"] = pose
    elif init.latent is not None:
        variables["body_pose"] = tensor(init.latent, problem.vposer.latent_dim)
    else:
        with torch.no_grad():
            variables["body_pose"] = problem.vposer.encode_mean(pose[:, : NUM_PRIOR_JOINTS * 3])
    for name, value in variables.items():
        if not torch.isfinite(value).all():
            raise InputError(f"initial {name} contains NaN or inf")
    if init.global_orient is None:
        variables = _orientation_hypotheses(problem, config, variables)
    if init.transl is None:
        variables["transl"] = _translation_from_torso(problem, config, variables)
    return variables


def _camera_centres(cameras: OpenCVCamera) -> torch.Tensor:
    return -torch.einsum("ncd,nc->nd", cameras.R, cameras.t)


def _translation_from_torso(problem: _Problem, config: FitConfig, variables: dict) -> torch.Tensor:
    """(B, 3): similar triangles per view (3D torso extent vs 2D extent at focal f), averaged in the world."""
    with torch.no_grad():
        states = _states(problem, config, {**variables, "transl": torch.zeros_like(variables["transl"])}, 0, 0, False)
        return torch.stack([_place_one(problem, state.keypoints_3d) for state in states])


def _place_one(problem: _Problem, sites: torch.Tensor) -> torch.Tensor:
    estimates = []
    for view in range(len(problem.cameras)):
        visible = (problem.confidence[view] > 0) & problem.torso
        if visible.sum() < 2:
            visible = problem.confidence[view] > 0
        if visible.sum() < 2:
            continue
        points3d, points2d = sites[visible], problem.keypoints[view][visible]
        K, R, t = problem.cameras.K[view], problem.cameras.R[view], problem.cameras.t[view]
        depth = math.sqrt(float(K[0, 0] * K[1, 1])) * torch.pdist(points3d).sum() / torch.pdist(points2d).sum().clamp_min(1.0)
        centre = points2d.mean(0)
        ray = torch.stack([(centre[0] - K[0, 2]) / K[0, 0], (centre[1] - K[1, 2]) / K[1, 1], torch.ones_like(depth)])
        estimates.append(R.T @ (ray * depth - t) - points3d.mean(0))
    if not estimates:
        raise InputError("no view has two keypoints with confidence > 0; cannot place the body")
    return torch.stack(estimates).mean(0)


def _orientation_hypotheses(problem: _Problem, config: FitConfig, variables: dict) -> dict:
    """Upright orientations: facing the first camera, then turned by 360/n degrees each (n hypotheses)."""
    like, count = variables["transl"], config.orientation_hypotheses
    position = _place_one(problem, _states(problem, config, variables, 0, 0, False)[0].keypoints_3d)
    towards = _camera_centres(problem.cameras)[0] - position
    facing = math.atan2(float(towards[0]), float(towards[2]))
    yaws = [facing + 2 * math.pi * k / count for k in range(count)]
    rotations = torch.stack([rotation_about_y(yaw, dtype=like.dtype) for yaw in yaws]).to(like.device)
    expanded = {name: value.expand(count, *value.shape[1:]).clone() for name, value in variables.items()}
    expanded["global_orient"] = matrix_to_rotation_6d(rotations)
    return expanded


# ---------------------------------------------------------------------------------- the loop
def _run_stage(problem: _Problem, config: FitConfig, extra: dict[str, ExtraTerm], variables: dict, index: int,
               report: Callable[[int], None]) -> tuple[StageHistory, torch.Tensor]:
    """Optimise one stage in place; returns its history and each hypothesis's last total (B,)."""
    stage = config.stages[index]
    names = [name for name in stage.optimise if name != "view_logits" or config.learn_view_weights]
    leaves = [variables[name].requires_grad_(True) for name in names]
    batch = variables["transl"].shape[0]
    if not leaves or stage.iterations == 0:
        return StageHistory(stage.name, np.zeros(0, np.float32), _frozen({})), torch.zeros(batch)
    optimiser = (torch.optim.AdamW(leaves, lr=stage.lr, weight_decay=config.weight_decay) if config.weight_decay > 0
                 else torch.optim.Adam(leaves, lr=stage.lr))
    active_extra = {name: term for name, term in extra.items() if _weighs(term.weights[index])}
    need_vertices = any(term.needs_vertices for term in active_extra.values())
    totals, per_term, skipped, last = [], {}, 0, torch.zeros(batch)
    for step in range(stage.iterations):
        optimiser.zero_grad(set_to_none=True)
        weights = {name: _weight_at(w, step, stage.iterations) for name, w in stage.weights.items()}
        wanted = tuple(name for name, weight in weights.items() if weight != 0.0)
        hypotheses = []
        for state in _states(problem, config, variables, index, step, need_vertices):
            terms = {name: value * weights[name]
                     for name, value in _energies(problem, config, stage, state, wanted).items()}
            for name, term in active_extra.items():
                value = term.fn(state)
                if not isinstance(value, torch.Tensor) or value.dim() != 0:
                    raise TypeError(f"extra term {name!r} must return a scalar tensor")
                terms[name] = value * _weight_at(term.weights[index], step, stage.iterations)
            hypotheses.append(terms)
        sums = torch.stack([sum(terms.values()) if terms else leaves[0].sum() * 0 for terms in hypotheses])
        total = sums.sum()
        finite = bool(torch.isfinite(total))
        if finite and total.requires_grad:
            total.backward()
        if finite and total.requires_grad and all(l.grad is None or torch.isfinite(l.grad).all() for l in leaves):
            optimiser.step()
        else:
            skipped += 1
        last = sums.detach().cpu()
        best = int(torch.nan_to_num(last, nan=float("inf")).argmin())
        totals.append(float(last[best]))
        if hypotheses[best]:  # one transfer for every term (one device sync per iteration)
            values = torch.stack([value.detach() for value in hypotheses[best].values()]).cpu().tolist()
            for name, value in zip(hypotheses[best], values):
                per_term.setdefault(name, []).append(value)
        report(step + 1)
    for leaf in leaves:
        leaf.requires_grad_(False)
    history = StageHistory(stage.name, np.asarray(totals, np.float32),
                           _frozen({name: np.asarray(values, np.float32) for name, values in per_term.items()}), skipped)
    return history, last


def _keep_best(variables: dict, last: torch.Tensor) -> dict:
    best = int(torch.nan_to_num(last, nan=float("inf")).argmin())
    return {name: value[best:best + 1].detach().clone() for name, value in variables.items()}


def _result(problem: _Problem, config: FitConfig, variables: dict, history: list[StageHistory], layout: str) -> BodyFit:
    with torch.no_grad():
        state = _states(problem, config, variables, len(config.stages), 0, True)[0]
        weights = energies.normalised_view_weights(state.view_weights, len(problem.cameras), state.projected)
        error = energies.reprojection_error_px(state.projected, problem.keypoints)
    numpy = lambda tensor: tensor.detach().cpu().numpy().astype(np.float32)
    return BodyFit(
        topology=problem.body.topology, transl=numpy(state.transl),
        global_orient=numpy(matrix_to_axis_angle(state.global_orient)), body_pose=numpy(state.body_pose),
        betas=numpy(state.betas), latent=None if state.latent is None else numpy(state.latent),
        joints=numpy(state.joints), vertices=numpy(state.vertices), keypoints_3d=numpy(state.keypoints_3d),
        projected=numpy(state.projected), reprojection_error_px=numpy(error), view_weights=numpy(weights),
        history=tuple(history), layout=layout, prior="vposer" if problem.vposer is not None else "open-body")


def fit_body(body: BodyModel, keypoints: Keypoints2D | Sequence[Keypoints2D], cameras: OpenCVCamera | Sequence[OpenCVCamera],
             *, config: FitConfig = FitConfig(), vposer: VPoser | None = None, init: BodyInit = BodyInit(),
             extra_terms: Mapping[str, ExtraTerm | tuple] | None = None, sites: KeypointSites | None = None,
             vertex_subset=None, progress: Callable[[float, str], object] | None = None) -> BodyFit:
    """Fit ``body`` to keypoints seen by one camera per view; returns a frozen ``BodyFit``.

    keypoints: one ``Keypoints2D`` per view (``coco17`` or ``body22``); cameras: ``OpenCVCamera`` with
    N = number of views (or a list). ``vposer`` switches the pose variable to its latent.
    ``vertex_subset``: (S,) vertex indices posed every iteration as ``FitState.subset_vertices`` (for
    extra terms that need only those; see the module docstring).
    ``progress(fraction, description)`` is called after every iteration (``gr.Progress`` works as is;
    ``tqdm_progress(bar)`` adapts tqdm).
    """
    # 1. Check the inputs and turn them into tensors on the body's device.
    problem, views = _prepare(body, keypoints, cameras, config, vposer, sites, vertex_subset)
    extra = _check_extra_terms(extra_terms, config)
    # 2. Initialise: upright orientation hypotheses around the first camera, translation from the torso's size.
    variables = _initial_variables(problem, init, config)
    # 3. Run the stages, each with its own optimiser, variables and energy weights; after stage
    #    ``select_after`` only the hypothesis with the lowest energy goes on.
    total = max(sum(stage.iterations for stage in config.stages), 1)
    done, history = 0, []
    for index, stage in enumerate(config.stages):
        report = (lambda step, done=done, stage=stage:
                  progress((done + step) / total, stage.name) if progress is not None else None)
        stage_history, last = _run_stage(problem, config, extra, variables, index, report)
        history.append(stage_history)
        if index + 1 >= config.select_after or index + 1 == len(config.stages):
            variables = _keep_best(variables, last)
        done += stage.iterations
    # 4. Pose the whole body once with the final parameters.
    return _result(problem, config, variables, history, views[0].layout)
