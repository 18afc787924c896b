"""The GenZI pipeline (diffusers style): components passed in, ``__call__`` in the paper's numbered stages.

Components: the inpainting pipeline (``inpaint.load_inpainting_pipeline``), a 2D pose estimator (the
fitting core's ViTPose; any callable ``image, mask -> Keypoints2D`` in coco17), a CLIP scorer
(``metrics.ClipScorer``), a body (``engine.body.load_body``) and optionally VPoser.

Stages (paper section 3 and the release's generation.py)
    1. Views: cameras around the point (``views.select_views``) and shaded scene renders.
    2. Inpainting, stage 0: ``inpaints_per_view[0]`` people per view with dynamic masks.
    3. 2D pose: ViTPose inside each inpainting's mask, mapped to GenZI's 17 joints; a view is kept when
       13 of them have confidence >= 0.25. The big toes come from a COCO-WholeBody ViTPose
       (``keypoint_layout`` ``coco23``); with a COCO-17 one they are missing, and
       ``GenziOutput.joint_sources`` (saved in ``joints.json``) says so.
    4. Lifting: one body per inpainting index i, from the i-th inpainting of every kept view; all sets of
       a stage (and their orientation hypotheses) are optimised together (``lifting.lift_many``).
    5. Refinement: stage-0 bodies ranked by CLIP score, the top half kept; each one's silhouette,
       dilated (81 x 81), is the fixed mask of ``inpaints_per_view[1]`` new inpaintings per view, which
       are lifted again starting from that body (self-penetration on, as the release's stage 1); every
       kept body's sets in one batch.
    6. Metrics: CLIP score, non-collision, contact and pose features of every body.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np
import torch

from engine.body.model import BodyModel
from engine.errors import InputError
from engine.fitting.fit import BodyFit, BodyInit
from engine.genzi import inpaint as inpainting
from engine.genzi import lifting, masks, metrics, views
from engine.genzi.scenes import Scene, check_point
from engine.genzi.sdf import SceneSDF, scene_sdf
from engine.render.rasterizer import rasterize_meshes
from engine.render.shading import PhongMaterial, phong_shade

BODY_COLOUR = (0.85, 0.62, 0.5)
SCENE_COLOUR = (0.75, 0.75, 0.75)


@dataclass(frozen=True)
class GenziConfig:
    """inpaints_per_view: stage 0 and stage 1 (GenZI: 4 and 2).  keep_fraction: stage-0 bodies refined."""

    views: views.ViewConfig = field(default_factory=views.ViewConfig)
    inpaint: inpainting.InpaintConfig = field(default_factory=inpainting.InpaintConfig)
    lift: lifting.LiftConfig = field(default_factory=lifting.LiftConfig)
    inpaints_per_view: tuple[int, int] = (4, 2)
    keep_fraction: float = 0.5
    sdf_dim: int = 128


@dataclass(frozen=True)
class GenziBody:
    """One generated body. stage: 0 or 1.  index: its inpainting set.  fit: the fitting core's result.
    view_ids: the kept views (indices into ``GenziOutput.cameras``).  clip: mean CLIP score over its renders."""

    stage: int
    index: int
    fit: BodyFit
    view_ids: tuple[int, ...]
    clip: float
    non_collision: float
    contact: float


@dataclass(frozen=True)
class GenziOutput:
    """Everything one prompt produced.

    selection: the views (cameras, eyes, ratios).  renders: (K, H, W, 3) uint8 scene views.
    inpaintings: per stage an ``InpaintResult`` (stage 1: one per refined body).  keypoints: per stage
    and inpainting, one body22 ``Keypoints2D`` or None (rejected) per view.  bodies: every lifted body.
    failures: inpainting sets that could not be lifted, in words.  metrics: the per-prompt metrics.
    joint_sources: GenZI joint -> where its 2D keypoints came from (ViTPose keypoint, derived, or missing).
    """

    prompt: str
    selection: views.ViewSelection
    renders: np.ndarray
    inpaintings: tuple[tuple[inpainting.InpaintResult, ...], ...]
    keypoints: tuple
    bodies: tuple[GenziBody, ...]
    failures: tuple[str, ...]
    metrics: metrics.PromptMetrics
    joint_sources: Mapping[str, str] = field(default_factory=dict)


class GenziPipeline:
    def __init__(self, inpaint_pipe, pose_estimator, clip: metrics.ClipScorer, body: BodyModel, vposer=None,
                 config: GenziConfig = GenziConfig()):
        self.inpaint_pipe, self.pose_estimator, self.clip = inpaint_pipe, pose_estimator, clip
        self.body, self.vposer, self.config = body, vposer, config
        # a whole-body ViTPose gives the big toes too; any other estimator: COCO-17
        self.keypoint_layout = getattr(pose_estimator, "keypoint_layout", "coco17")

    def __call__(self, scene: Scene, prompt: str, point, *, negative: str = "", sdf: SceneSDF | None = None,
                 progress=None) -> GenziOutput:
        config = self.config
        report = progress or (lambda fraction, text: None)
        # Check the cheap inputs first: the prompt's length and the point.
        inpainting.check_length(self.inpaint_pipe.tokenizer, inpainting.build_text(prompt, config.inpaint))
        checked = check_point(scene, point)
        # 1. Views.
        report(0.0, "1. views")
        selection = views.select_views(scene, checked, config.views)
        device = self.body.device
        renders = views.render_views(scene, selection.cameras, config.inpaint.image_size, device=device)
        cameras = selection.cameras.to_opencv((config.inpaint.image_size,) * 2)
        cameras = type(cameras)(cameras.K.to(device), cameras.R.to(device), cameras.t.to(device))
        sdf = (sdf if sdf is not None else scene_sdf(scene, config.sdf_dim)).to(device)
        # 2. Inpainting with dynamic masks (stage 0).
        report(0.1, "2. inpainting (dynamic masks)")
        first = inpainting.inpaint(self.inpaint_pipe, renders, prompt, config.inpaint, negative=negative,
                                   samples_per_view=config.inpaints_per_view[0])
        # 3. + 4. 2D pose and lifting of each inpainting set (all sets' hypotheses in one batch).
        report(0.4, "3. 2D pose, 4. lifting")
        bodies, keypoints, failures = self._lift_stage([first], cameras, sdf, checked.nearest, 0, len(renders), [None])
        keypoint_log = list(keypoints)
        # 5. Refinement: CLIP ranking, dilated silhouettes as fixed masks, lifting from the kept bodies
        #    (every kept body's new inpainting sets lifted together).
        report(0.6, "5. refinement")
        text = metrics.clip_text(prompt, config.inpaint.prefix)
        bodies = [self._scored(body, scene, selection, text, sdf) for body in bodies]
        refined_inpaintings = []
        if bodies and config.inpaints_per_view[1] > 0:
            kept = [bodies[i] for i in metrics.rank_by_clip([b.clip for b in bodies], config.keep_fraction)]
            for prior in kept:
                silhouettes = masks.dilate(torch.from_numpy(self._silhouettes(prior.fit, scene, selection)))
                refined_inpaintings.append(inpainting.inpaint(
                    self.inpaint_pipe, renders, prompt, config.inpaint, negative=negative,
                    fixed_masks=silhouettes.numpy(), samples_per_view=config.inpaints_per_view[1]))
            new, keys, failed = self._lift_stage(refined_inpaintings, cameras, sdf, checked.nearest, 1, len(renders),
                                                 [prior.fit for prior in kept])
            bodies += [self._scored(body, scene, selection, text, sdf) for body in new]
            keypoint_log += keys
            failures += failed
        # 6. Metrics.
        report(0.95, "6. metrics")
        result = metrics.PromptMetrics(scene.name, prompt, tuple(b.clip for b in bodies),
                                       tuple(b.non_collision for b in bodies), tuple(b.contact for b in bodies),
                                       tuple(tuple(float(v) for v in b.fit.body_pose) for b in bodies))
        report(1.0, "done")
        return GenziOutput(prompt, selection, renders, (first, *refined_inpaintings), tuple(keypoint_log),
                           tuple(bodies), tuple(failures), result,
                           MappingProxyType(lifting.joint_sources(self.keypoint_layout)))

    def _keypoints(self, result: inpainting.InpaintResult, num_views: int) -> tuple:
        """Per inpainting set, one accepted body22 ``Keypoints2D`` or None (rejected) per view."""
        extra = {"layout": "coco23"} if self.keypoint_layout == "coco23" else {}
        sets = []
        for index in range(len(result.images) // num_views):
            per_view = []
            for view in range(num_views):
                try:
                    coco = self.pose_estimator(result.images[index * num_views + view],
                                               mask=result.masks[index * num_views + view], **extra)
                except InputError:  # no person found in the mask: the view is rejected, as a low score would be
                    per_view.append(None)
                    continue
                mapped = lifting.genzi_keypoints(coco)
                per_view.append(mapped if lifting.accepted(mapped) else None)
            sets.append(tuple(per_view))
        return tuple(sets)

    def _lift_stage(self, results, cameras, sdf, point, stage: int, num_views: int, priors: list):
        """One body per inpainting index of each result (result r warm-started from ``priors[r]``, a
        ``BodyFit`` or None), from its accepted views; every set of the stage is lifted in one batch
        (``lifting.lift_many``). Rejected sets are reported, never faked. Returns the bodies, the
        keypoints per result, and the failures."""
        jobs, owners, keypoints, failures = [], [], [], []
        for result, prior in zip(results, priors):
            sets = self._keypoints(result, num_views)
            keypoints.append(sets)
            init = None if prior is None else BodyInit(transl=prior.transl, global_orient=prior.global_orient,
                                                       body_pose=prior.body_pose, betas=prior.betas, latent=prior.latent)
            for index, per_view in enumerate(sets):
                kept = [view for view, value in enumerate(per_view) if value is not None]
                if not kept:
                    failures.append(f"stage {stage}, inpainting set {index}: no view shows a person with 13 of 17 joints")
                    continue
                chosen = type(cameras)(cameras.K[kept], cameras.R[kept], cameras.t[kept])
                jobs.append(lifting.LiftJob(tuple(per_view[v] for v in kept), chosen, init))
                owners.append((index, tuple(kept)))
        if not jobs:
            return [], keypoints, failures
        config = self.config.lift if stage == 0 else _with_self_penetration(self.config.lift)
        fits = lifting.lift_many(self.body, jobs, sdf, point, vposer=self.vposer, config=config)
        bodies = [GenziBody(stage, index, fit, kept, float("nan"), float("nan"), float("nan"))
                  for (index, kept), fit in zip(owners, fits)]
        return bodies, keypoints, failures

    def _scored(self, body: GenziBody, scene: Scene, selection, text: str, sdf: SceneSDF) -> GenziBody:
        images = render_with_body(scene, body.fit, self.body.faces, selection, self.config.inpaint.image_size)
        vertices = torch.as_tensor(body.fit.vertices, device=self.body.device)
        physical = metrics.physical(sdf(vertices).detach().cpu().numpy()[None])
        return GenziBody(body.stage, body.index, body.fit, body.view_ids, self.clip.clip_score(images, text),
                         physical.non_collision, physical.contact)

    def _silhouettes(self, fit: BodyFit, scene: Scene, selection) -> np.ndarray:
        return body_silhouettes(scene, fit, self.body.faces, selection, self.config.inpaint.image_size)


def _with_self_penetration(config: lifting.LiftConfig) -> lifting.LiftConfig:
    return dataclasses.replace(config, self_penetration=True, orientation_hypotheses=1)


def _scene_and_body(scene: Scene, fit: BodyFit, body_faces):
    """One mesh of the scene and the body, on the body faces' device."""
    device = torch.as_tensor(body_faces).device
    vertices = torch.cat([torch.from_numpy(scene.vertices.copy()).float(), torch.from_numpy(fit.vertices).float()])
    faces = torch.cat([torch.from_numpy(scene.faces.copy()), torch.as_tensor(body_faces).long().cpu() + len(scene.vertices)])
    return vertices.to(device), faces.to(device)


def _rasterized(scene: Scene, fit: BodyFit, body_faces, selection, size: int):
    vertices, faces = _scene_and_body(scene, fit, body_faces)
    screen = selection.cameras.to(vertices.device).transform_points_screen(vertices, (size, size))
    return vertices, faces, rasterize_meshes(screen, faces, (size, size))


def body_silhouettes(scene: Scene, fit: BodyFit, body_faces, selection, size: int) -> np.ndarray:
    """(K, H, W) bool: pixels where the body is in front of the scene."""
    _, _, fragments = _rasterized(scene, fit, body_faces, selection, size)
    return (fragments.pix_to_face >= len(scene.faces)).cpu().numpy()


def render_with_body(scene: Scene, fit: BodyFit, body_faces, selection, size: int) -> np.ndarray:
    """(K, H, W, 3) uint8 Phong renders of the grey scene with the body (skin colour), lit from each camera."""
    from engine.mesh import vertex_normals

    vertices, faces, fragments = _rasterized(scene, fit, body_faces, selection, size)
    colours = torch.tensor(SCENE_COLOUR, device=vertices.device).repeat(len(vertices), 1)
    colours[len(scene.vertices):] = torch.tensor(BODY_COLOUR, device=vertices.device)
    normals = vertex_normals(vertices, faces)
    eyes = selection.cameras.to(vertices.device).camera_centres()
    images = []
    for index in range(len(eyes)):
        single = type(fragments)(fragments.pix_to_face[index:index + 1], fragments.bary[index:index + 1],
                                 fragments.zbuf[index:index + 1])
        lights = (tuple(eyes[index].tolist()),)
        image = phong_shade(single, faces, vertices, normals, colours, eyes[index:index + 1], lights=lights,
                            material=PhongMaterial(ambient=0.35, diffuse=0.55, specular=0.1))
        images.append((image[0] * 255).round().to(torch.uint8).cpu().numpy())
    return np.stack(images)
