"""GenZI's multi-view lifting on the fitting core (``engine.fitting.fit``).

2D pose
    GenZI fits 17 joints (release pose2d.py, Halpe keypoints): pelvis, hips, neck, shoulders, knees,
    ankles, big toes (the SMPL-X foot joints), nose (matched to the head joint), elbows, wrists. Our 2D
    pose is ViTPose (``engine.fitting.vitpose``). Pelvis = mid-hips and neck = mid-shoulders are
    always derived (confidence: the lower of the two). The big toes come from the model when it is a
    COCO-WholeBody ViTPose (133 keypoints, ``coco23`` keypoints: its keypoints 17 and 20); a COCO-17
    ViTPose has no toe keypoint, so they are missing (confidence 0), never guessed.
    ``joint_sources(layout)`` says in words where each joint came from; the pipeline stores it with
    its results. ``genzi_keypoints`` writes the result in the fitting core's ``body22`` layout (the 5
    other joints at confidence 0). A view is accepted when at least 13 of the 17 joints have
    confidence >= 0.25; with COCO-17 at most 15 can, so such a view is accepted with at most two
    joints missing.

Lifting (release generation.py / configs, REFERENCE.md section 2)
    Variables: translation, 6D global orientation, the VPoser latent (or the open-body pose with its
    prior), betas, one view score per view (sigmoid of a logit starting at 0, so s = 0.5).
    4 phases x 400 iterations, AdamW lr 0.01 with weight decay 0.01 on every variable; the view
    scores are frozen in phase 1. Weights interpolate linearly inside each phase between GenZI's 5
    anchors (Sketchfab stage 0). The 2D term is GenZI's: Geman-McClure with rho 0.2 on pixels / 512
    (the core's pixel energy with rho = 102.4 px, weighed by 1 / 512^2), view selection relu(3 - sum s).
    Scene penetration, contact and self-penetration come from ``engine.genzi.energies`` as extra terms.
    Priors: the core's VPoser ``sum z^2`` (GenZI's mean: weights / 32) or the open-body Gaussian
    (weights / 63), shape ``sum beta^2`` (weights / number of betas), and the core's joint-limit
    angle prior.
    Start: translation halfway between the mean camera position and the point (the release), and the
    core's upright orientation hypotheses (the release uses one fixed yaw); the best continues after
    phase 1.
    Cost (CPU): the scene and self-penetration terms read a fixed subset of the body's vertices
    (``scene_vertex_ids``), posed by the fitting core in the same skinning call as the joints; the
    whole mesh is skinned only for the result (and the metrics). Lifting runs with one torch thread on
    the CPU (``LiftConfig.cpu_threads``). ``benchmarks/bench_genzi.py`` times it.
    Batched (``lift_many``, what the pipeline runs): every inpainting set of a stage and every
    orientation hypothesis are the rows of one optimiser loop (``engine.genzi.batch``), each body equal
    to ``lift`` of its set alone (tests/genzi/test_genzi_batch.py); ``lift`` is the fitting core's loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.body.model import BodyModel
from engine.body.skeleton import BODY_JOINT_NAMES
from engine.errors import InputError
from engine.fitting.fit import (BodyFit, BodyInit, ExtraTerm, FitConfig, FitState, StageConfig, cpu_threads,
                                fit_body)
from engine.fitting.keypoints import Keypoints2D
from engine.genzi import batch, energies
from engine.genzi.sdf import SceneSDF
from engine.render.cameras import OpenCVCamera

GENZI_JOINTS: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "neck", "left_shoulder", "right_shoulder",  # torso
    "left_knee", "right_knee", "left_ankle", "right_ankle", "left_foot", "right_foot", "head",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist")
GENZI_JOINT_IDS = tuple(BODY_JOINT_NAMES.index(name) for name in GENZI_JOINTS)
# body22 joint -> the COCO-17 keypoint(s) it comes from (two: their midpoint)
FROM_COCO: dict[str, tuple[str, ...]] = {
    "pelvis": ("left_hip", "right_hip"), "neck": ("left_shoulder", "right_shoulder"), "head": ("nose",),
    **{name: (name,) for name in ("left_hip", "right_hip", "left_shoulder", "right_shoulder", "left_knee",
                                  "right_knee", "left_ankle", "right_ankle", "left_elbow", "right_elbow",
                                  "left_wrist", "right_wrist")},
}
MIN_JOINTS = 13
MIN_CONFIDENCE = 0.25
PHASE_ITERATIONS = 400
LEARNING_RATE = 0.01
WEIGHT_DECAY = 0.01
IMAGE_SCALE = 512.0
RHO = 0.2
SCENE_VERTEX_STRIDE = 4  # scene terms see every 4th vertex (2654 of the open body's 10614)
CPU_THREADS = 1  # torch threads while lifting on the CPU (see engine.fitting.fit.cpu_threads)

# GenZI's anchors (Sketchfab, stage 0): phase k goes from anchor k to anchor k + 1.
ANCHORS = {
    "pose_prior": (0, 0, 0, 1e-4, 1e-3), "shape_prior": (0, 0, 0, 1e-3, 0.2), "angle_prior": (0, 0, 0, 1, 1),
    "scene_penetration": (1, 0.1, 0.01, 0.1, 1), "scene_contact": (0, 0, 0, 5, 10),
    "self_penetration": (0, 0, 0, 1e-6, 1e-5),
}


FROM_WHOLEBODY: dict[str, tuple[str, ...]] = {"left_foot": ("left_big_toe",), "right_foot": ("right_big_toe",)}


def _sources(layout: str) -> dict[str, tuple[str, ...]]:
    if layout not in ("coco17", "coco23"):
        raise InputError(f"GenZI's joints are derived from coco17 or coco23 keypoints, got {layout}")
    return {**FROM_COCO, **(FROM_WHOLEBODY if layout == "coco23" else {})}


def joint_sources(layout: str) -> dict[str, str]:
    """GenZI joint -> where its 2D position comes from, in words, for ViTPose keypoints of ``layout``."""
    sources = _sources(layout)
    words = {}
    for name in GENZI_JOINTS:
        if name not in sources:
            words[name] = "missing: a COCO-17 ViTPose has no big-toe keypoint (confidence 0, not fitted)"
        elif len(sources[name]) == 2:
            words[name] = f"derived: midpoint of {sources[name][0]} and {sources[name][1]}"
        else:
            words[name] = f"ViTPose {sources[name][0]}"
    return words


def genzi_keypoints(coco: Keypoints2D) -> Keypoints2D:
    """COCO-17 or ``coco23`` keypoints as GenZI's 17 joints in the ``body22`` layout (see the module docstring)."""
    sources = _sources(coco.layout)
    xy = np.zeros((len(BODY_JOINT_NAMES), 2), np.float32)
    confidence = np.zeros(len(BODY_JOINT_NAMES), np.float32)
    for name, names in sources.items():
        ids = [coco.names.index(source) for source in names]
        joint = BODY_JOINT_NAMES.index(name)
        xy[joint] = coco.xy[ids].mean(0)
        confidence[joint] = coco.confidence[ids].min()
    return Keypoints2D(xy=xy, confidence=confidence, image_size=coco.image_size, layout="body22", box=coco.box)


def accepted(keypoints: Keypoints2D) -> bool:
    """At least 13 of GenZI's 17 joints with confidence >= 0.25 (``body22`` keypoints)."""
    if keypoints.layout != "body22":
        raise InputError("view acceptance counts GenZI's joints in the body22 layout; map coco17 with genzi_keypoints")
    return int((keypoints.confidence[list(GENZI_JOINT_IDS)] >= MIN_CONFIDENCE).sum()) >= MIN_JOINTS


def only_genzi_joints(keypoints: Keypoints2D) -> Keypoints2D:
    """``body22`` keypoints with the 5 joints GenZI does not fit (spine, collars) at confidence 0."""
    keep = np.zeros(len(BODY_JOINT_NAMES), np.float32)
    keep[list(GENZI_JOINT_IDS)] = 1.0
    return Keypoints2D(xy=keypoints.xy, confidence=keypoints.confidence * keep, image_size=keypoints.image_size,
                       layout="body22", box=keypoints.box)


def _phases(anchors) -> tuple[tuple[float, float], ...]:
    return tuple((float(anchors[k]), float(anchors[k + 1])) for k in range(4))


@dataclass(frozen=True)
class LiftConfig:
    """phase_iterations: iterations per phase (GenZI: 400).  threshold: the scene penetration threshold
    (Sketchfab -0.01, PROX-S 0).  self_penetration: weigh the capsule term (GenZI: stage 1 only).
    anchors: GenZI's 5 anchors per extra or prior term (``ANCHORS``).  orientation_hypotheses: upright
    starts tried side by side in phase 1.  cpu_threads: torch threads while lifting on the CPU (None:
    leave the process setting alone)."""

    phase_iterations: int = PHASE_ITERATIONS
    threshold: float = energies.SCENE_THRESHOLD
    self_penetration: bool = False
    anchors: tuple[tuple[str, tuple[float, ...]], ...] = tuple(ANCHORS.items())
    orientation_hypotheses: int = 4
    cpu_threads: int | None = CPU_THREADS


def fit_config(body: BodyModel, prior: str, config: LiftConfig = LiftConfig()) -> FitConfig:
    """The fitting core's schedule for GenZI: 4 phases, every variable, AdamW, view scores from phase 2."""
    anchors = dict(config.anchors)
    pose_scale = 1 / 32 if prior == "vposer" else 1 / (body.num_body_joints * 3)
    scale = {"pose_prior": pose_scale, "shape_prior": 1 / body.num_betas, "angle_prior": 1.0}
    stages = []
    for phase in range(4):
        weights = {"reprojection": 1.0 / IMAGE_SCALE ** 2, "view_selection": 1.0}
        for name in ("pose_prior", "shape_prior", "angle_prior"):
            start, end = _phases(anchors[name])[phase]
            weights[name] = (start * scale[name], end * scale[name])
        variables = ("transl", "global_orient", "body_pose", "betas") + (("view_logits",) if phase else ())
        stages.append(StageConfig(f"{phase + 1}. GenZI phase {phase + 1}", config.phase_iterations, LEARNING_RATE,
                                  variables, weights))
    return FitConfig(stages=tuple(stages), rho=RHO * IMAGE_SCALE, weight_decay=WEIGHT_DECAY, learn_view_weights=True,
                     min_views=energies.MIN_VIEWS, orientation_hypotheses=config.orientation_hypotheses, select_after=1)


def scene_vertex_ids(body: BodyModel, stride: int = SCENE_VERTEX_STRIDE) -> torch.Tensor:
    """The fixed vertex subset the scene and self-penetration terms see: every ``stride``-th vertex
    (2654 of the open body's 10614, 2619 of SMPL-X's 10475). The fitting core poses it together with
    the joints (``fit_body(vertex_subset=...)``), so no iteration skins the whole mesh; the metrics
    use the whole mesh. Its accuracy against every vertex (tests/genzi/test_genzi_lifting.py, 24
    sitting bodies jittered around the sofa, SDF grid 96): the minimum SDF (the contact term) is
    within 1.5 cm of the whole mesh's (measured 1.2 cm at most), the penetrating fraction within 0.01
    (measured 0.006) and the penetration energy within 3 mm (both are means in metres)."""
    return torch.arange(0, body.num_vertices, stride, device=body.device)


class SceneSamples:
    """The SDF at a state's subset vertices, sampled once per state and shared by the scene terms."""

    def __init__(self, sdf: SceneSDF):
        self.sdf = sdf
        self._last: tuple[FitState, torch.Tensor] | None = None  # the state itself: ids of freed states recur

    def __call__(self, state: FitState) -> torch.Tensor:
        if self._last is None or self._last[0] is not state:
            self._last = (state, self.sdf(state.subset_vertices))
        return self._last[1]


def scene_terms(sdf: SceneSDF, body: BodyModel, config: LiftConfig = LiftConfig()) -> dict[str, ExtraTerm]:
    """GenZI's scene (and, with ``config.self_penetration``, self-penetration) terms on the states'
    ``subset_vertices``: run the fit with ``vertex_subset=scene_vertex_ids(body)``."""
    anchors = dict(config.anchors)
    samples = SceneSamples(sdf)
    terms = {
        "scene_penetration": ExtraTerm(lambda state: energies.scene_penetration(samples(state), config.threshold),
                                       _phases(anchors["scene_penetration"]), needs_vertices=False),
        "scene_contact": ExtraTerm(lambda state: energies.scene_contact(samples(state), config.threshold),
                                   _phases(anchors["scene_contact"]), needs_vertices=False),
    }
    if config.self_penetration:
        ids = scene_vertex_ids(body).cpu().numpy()  # capsules fitted on the same subset, so their axes follow it
        subset = energies.fit_part_capsules(body.v_template.detach().cpu().numpy()[ids],
                                            energies.body_part_labels(body)[ids]).to(body.device)
        terms["self_penetration"] = ExtraTerm(lambda state: energies.self_penetration(state.subset_vertices, subset),
                                              _phases(anchors["self_penetration"]), needs_vertices=False)
    return terms


def initial_translation(cameras: OpenCVCamera, point) -> np.ndarray:
    """Halfway between the mean camera position and the point (the release's start)."""
    centres = -torch.einsum("ncd,nc->nd", cameras.R, cameras.t).detach().cpu().numpy()
    return (centres.mean(0) + np.asarray(point, dtype=np.float64)) / 2


def _start(job_keypoints, cameras: OpenCVCamera, point, init: BodyInit | None) -> BodyInit:
    if len(job_keypoints) != len(cameras):
        raise InputError(f"{len(job_keypoints)} keypoint views but {len(cameras)} cameras")
    if not job_keypoints:
        raise InputError("no view was accepted (each needs 13 of GenZI's 17 joints with confidence >= 0.25)")
    return init if init is not None else BodyInit(transl=initial_translation(cameras, point))


def lift(body: BodyModel, keypoints: list[Keypoints2D], cameras: OpenCVCamera, sdf: SceneSDF, point, *,
         vposer=None, config: LiftConfig = LiftConfig(), init: BodyInit | None = None, progress=None) -> BodyFit:
    """Lift accepted ``body22`` views (one per camera) to one body in the scene; ``init`` warm-starts it
    (stage 1 starts from its stage-0 body), else the translation starts halfway to the cameras. The
    fitting core's loop, one hypothesis after another: ``lift_many`` gives the same bodies, batched."""
    start = _start(keypoints, cameras, point, init)
    views = [only_genzi_joints(view) for view in keypoints]
    prior = "vposer" if vposer is not None else "open-body"
    with cpu_threads(config.cpu_threads, body.device):
        return fit_body(body, views, cameras, config=fit_config(body, prior, config), vposer=vposer, init=start,
                        extra_terms=scene_terms(sdf, body, config), vertex_subset=scene_vertex_ids(body),
                        progress=progress)


@dataclass(frozen=True)
class LiftJob:
    """One body to lift: accepted ``body22`` views, their cameras (one per view) and an optional warm start."""

    keypoints: tuple[Keypoints2D, ...]
    cameras: OpenCVCamera
    init: BodyInit | None = None


def lift_many(body: BodyModel, jobs: list[LiftJob], sdf: SceneSDF, point, *, vposer=None,
              config: LiftConfig = LiftConfig(), progress=None) -> list[BodyFit]:
    """``lift`` of every job, all hypotheses optimised together in one loop (``engine.genzi.batch``):
    result i equals ``lift`` of job i alone (same starts, same updates, same selection)."""
    if not jobs:
        raise InputError("no inpainting set to lift")
    batch_jobs = []
    for number, job in enumerate(jobs):
        try:
            start = _start(job.keypoints, job.cameras, point, job.init)
        except InputError as error:
            raise InputError(f"job {number}: {error}") from None
        batch_jobs.append(batch.Job(tuple(only_genzi_joints(view) for view in job.keypoints), job.cameras, start))
    prior = "vposer" if vposer is not None else "open-body"
    with cpu_threads(config.cpu_threads, body.device):
        return batch.fit_bodies(body, batch_jobs, config=fit_config(body, prior, config), vposer=vposer,
                                extra_terms=scene_terms(sdf, body, config), vertex_subset=scene_vertex_ids(body),
                                progress=progress)
