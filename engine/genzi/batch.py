"""GenZI's lifting with every hypothesis in one optimiser loop: a leading batch dimension of rows.

Why: on a GPU one hypothesis's iteration is a few hundred tiny kernels, so lifting is launch-bound, and
the pipeline lifts its hypotheses one after another (each inpainting set of a stage, and inside each,
phase 1's orientation hypotheses, whose energies the fitting core evaluates one by one). Here a stage's
jobs (one per inpainting set: its accepted views, their cameras, its warm start) times their
orientation hypotheses are the rows of one batch: forward kinematics and skinning (the core's
``SiteModel``), the projection, the SDF sample and every energy run once per iteration for all rows,
and nothing inside an iteration waits for the device (no ``.item()``, no ``bool(tensor)``): losses,
skips and the history stay on the device until the end of each phase.

Equivalence with ``engine.fitting.fit.fit_body`` run on each job alone (tests/genzi/test_genzi_batch.py
checks final parameters, energies and histories):
    - Start: each job's variables come from the core's ``_initial_variables`` (orientation hypotheses,
      translation); the rows are their concatenation, ``owner[row]`` names the job.
    - Energies: the core's functions (``engine.fitting.energies``), vmapped over the rows, so each row
      gets exactly its own value; the extra terms (``lifting.scene_terms``) take the rows' subset
      vertices, (B, S, 3), and return (B,).
    - Views: jobs keep different views, so each job's views are padded to the largest count with
      confidence 0 and view mask 0 (their cameras copy the job's first camera, so the padding projects
      to finite pixels). The mask takes padded views out of the normalised view weights and of the
      view-selection sum; a padded logit gets no gradient, so it never moves.
    - Loss: the SUM of the rows' totals. Rows share no variable, so each row's gradient is that of its
      own total alone, as when its job runs alone (the core sums a job's hypotheses the same way). A
      mean would divide every gradient by the number of rows.
    - Optimiser: ``RowAdamW``, torch's Adam / AdamW update written per row, with a step count per row:
      where the core skips a job's iteration (loss or gradient not finite), only that job's rows stay
      as they are, without a device sync.
    - Selection: after phase ``select_after`` (GenZI: 1) each job keeps its row with the lowest last
      total (the core's ``_keep_best``); the history records, per iteration, the best row of each job.
Memory: rows = jobs x orientation hypotheses (GenZI: 4 x 4 in phase 1, 4 after); the largest tensor is
self-penetration's (rows, vertices, parts, 3) in stage 1 (4 x 2654 x 22 x 3 floats, 2.8 MB).
"""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch.func import vmap

from engine.body.model import BodyModel
from engine.body.skeleton import BODY_JOINT_NAMES
from engine.errors import InputError
from engine.fitting import energies as core
from engine.fitting.fit import (BodyFit, BodyInit, ExtraTerm, FitConfig, StageHistory, _check_extra_terms, _frozen,
                                _initial_variables, _pose, _prepare, _Problem, _result, _weighs, _weight_at)
from engine.fitting.keypoints import Keypoints2D
from engine.render.cameras import OpenCVCamera

BETAS = (0.9, 0.999)  # torch's Adam defaults, as the core's optimiser
EPS = 1e-8


@dataclass(frozen=True)
class Job:
    """One body to fit: body22 ``keypoints`` (one per view), ``cameras`` (N views), ``init`` (a warm start)."""

    keypoints: tuple[Keypoints2D, ...]
    cameras: OpenCVCamera
    init: BodyInit


@dataclass(frozen=True)
class Rows:
    """What the energies see at one iteration, one row per hypothesis (tensors carry gradients).

    owner: (B,) job of each row.  joints: (B, 22, 3).  keypoints_3d: (B, K, 3).  projected: (B, N, K, 2)
    pixels in the row's job's cameras (N: the most views of any job).  view_mask: (B, N) 1 for the job's
    own views, 0 for padding.  subset_vertices: (B, S, 3) or None.  vertices: (B, V, 3) or None.
    transl: (B, 3).  global_orient: (B, 3, 3).  body_pose: (B, D) axis-angle.  betas: (B, num_betas).
    latent: (B, latentD) or None.  view_weights: (B, N) raw scores, 0 on padding.
    """

    stage: int
    iteration: int
    owner: torch.Tensor
    joints: torch.Tensor
    keypoints_3d: torch.Tensor
    projected: torch.Tensor
    view_mask: torch.Tensor
    subset_vertices: torch.Tensor | None
    vertices: torch.Tensor | None
    transl: torch.Tensor
    global_orient: torch.Tensor
    body_pose: torch.Tensor
    betas: torch.Tensor
    latent: torch.Tensor | None
    view_weights: torch.Tensor


class RowAdamW:
    """Adam (``weight_decay`` 0) or AdamW over (B, ...) tensors, with a step count per row: ``step(grads,
    active)`` updates only the ``active`` rows, exactly as ``torch.optim.AdamW`` would update each row's
    own tensor (same formulas, same order: decay, lerp of the first moment, second moment, bias
    corrections; tests/genzi/test_genzi_batch.py compares them)."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float, weight_decay: float = 0.0):
        self.params, self.lr, self.weight_decay = list(params), lr, weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = torch.zeros(self.params[0].shape[0], dtype=torch.float64, device=self.params[0].device)

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], active: torch.Tensor) -> None:
        beta1, beta2 = BETAS
        self.steps += active
        steps = self.steps.clamp_min(1)  # rows never stepped: any finite value, their update is discarded
        step_size = (self.lr / (1 - beta1 ** steps)).to(self.params[0].dtype)
        correction2_sqrt = ((1 - beta2 ** steps) ** 0.5).to(self.params[0].dtype)
        for param, grad, exp_avg, exp_avg_sq in zip(self.params, grads, self.exp_avg, self.exp_avg_sq):
            shape = (-1,) + (1,) * (param.dim() - 1)
            keep = active.reshape(shape)
            grad = torch.where(keep, grad, torch.zeros_like(grad))  # a skipped row's grad may be NaN
            decayed = param * (1 - self.lr * self.weight_decay) if self.weight_decay else param
            first = exp_avg.lerp(grad, 1 - beta1)
            second = exp_avg_sq * beta2 + grad * grad * (1 - beta2)
            denominator = second.sqrt() / correction2_sqrt.reshape(shape) + EPS
            updated = decayed - step_size.reshape(shape) * first / denominator
            param.copy_(torch.where(keep, updated, param))
            exp_avg.copy_(torch.where(keep, first, exp_avg))
            exp_avg_sq.copy_(torch.where(keep, second, exp_avg_sq))


@dataclass(frozen=True)
class _Batch:
    """The jobs' inputs padded to N views and stacked: keypoints (J, N, K, 2), confidence (J, N, K),
    K, R, t (J, N, ...), view_mask (J, N), views (J,) real view counts, view_counts the same on the device."""

    problems: tuple[_Problem, ...]
    keypoints: torch.Tensor
    confidence: torch.Tensor
    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    view_mask: torch.Tensor
    views: tuple[int, ...]
    view_counts: torch.Tensor
    keypoint_index: torch.Tensor

    @classmethod
    def build(cls, problems: Sequence[_Problem]) -> "_Batch":
        width = max(len(problem.cameras) for problem in problems)

        def padded(tensor: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
            extra = width - tensor.shape[0]
            filler = (fill if fill is not None else torch.zeros_like(tensor[:1])).expand(extra, *tensor.shape[1:])
            return torch.cat([tensor, filler])

        stack = lambda get, copy_first=False: torch.stack([padded(get(p), get(p)[:1] if copy_first else None)
                                                           for p in problems])
        like = problems[0].keypoints
        mask = torch.stack([padded(like.new_ones(len(p.cameras))) for p in problems])
        return cls(tuple(problems), stack(lambda p: p.keypoints), stack(lambda p: p.confidence),
                   stack(lambda p: p.cameras.K, True), stack(lambda p: p.cameras.R, True),
                   stack(lambda p: p.cameras.t, True), mask, tuple(len(p.cameras) for p in problems),
                   mask.sum(-1), _keypoint_index(problems[0]))


def _keypoint_index(problem: _Problem) -> torch.Tensor:
    joints, sites = len(BODY_JOINT_NAMES), len(problem.sites.vertex_ids)  # SiteModel returns the body joints
    labels = torch.arange(joints + sites, dtype=torch.float64)[:, None]  # each row holds its own number
    return problem.sites.gather(labels[:joints], labels[joints:])[:, 0].long().to(problem.keypoints.device)


def _project(K: torch.Tensor, R: torch.Tensor, t: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return core.project_points(OpenCVCamera(K, R, t), points)


def _rows(batch: _Batch, config: FitConfig, variables: dict, owner: torch.Tensor, stage: int, iteration: int,
          need_vertices: bool) -> Rows:
    """Pose every row together (as the core's ``_states`` poses a job's hypotheses) and project each row
    into its own job's cameras."""
    problem = batch.problems[0]  # every job has the same body, keypoint sites and vertex subset
    posed = _pose(problem, variables, need_vertices)
    joints = posed.joints
    keypoints_3d = torch.cat([joints, posed.keypoint_vertices], 1).index_select(1, batch.keypoint_index)
    mask = batch.view_mask[owner]
    scores = torch.sigmoid(variables["view_logits"]) if config.learn_view_weights else torch.ones_like(mask)
    return Rows(stage=stage, iteration=iteration, owner=owner, joints=joints, keypoints_3d=keypoints_3d,
                projected=vmap(_project)(batch.K[owner], batch.R[owner], batch.t[owner], keypoints_3d),
                view_mask=mask, subset_vertices=posed.subset,
                vertices=posed.vertices, transl=variables["transl"], global_orient=posed.rotation,
                body_pose=posed.body_pose,
                betas=variables["betas"], latent=variables["body_pose"] if problem.vposer is not None else None,
                view_weights=scores * mask)


def _energies(batch: _Batch, config: FitConfig, stage_keypoints: str, rows: Rows, wanted) -> dict[str, torch.Tensor]:
    """The core's built-in energies in ``wanted``, (B,) each, unweighted (``fit._energies`` per row)."""
    problem = batch.problems[0]
    confidence = batch.confidence[rows.owner]
    if stage_keypoints == "torso":
        confidence = confidence * problem.torso
    row = lambda fn: (lambda value: fn(value[None]))  # the core's energies take (1, D) and average over it
    compute = {
        "reprojection": lambda: vmap(lambda p, k, c, w: core.reprojection_energy(p, k, c, config.rho, w))(
            rows.projected, batch.keypoints[rows.owner], confidence, rows.view_weights),
        "angle_prior": lambda: vmap(row(lambda pose: core.joint_limit_energy(pose, problem.prior.lower,
                                                                             problem.prior.upper)))(rows.body_pose),
        "shape_prior": lambda: vmap(row(lambda betas: core.shape_energy(betas, problem.shape_weights)))(rows.betas),
        "pose_prior": (lambda: vmap(row(core.latent_energy))(rows.latent)) if problem.vposer is not None else
                      (lambda: vmap(row(lambda pose: core.gaussian_pose_energy(pose, problem.prior.mean,
                                                                               problem.prior.std)))(rows.body_pose)),
    }
    if config.learn_view_weights:
        counts = batch.view_counts[rows.owner]
        compute["view_selection"] = lambda: (vmap(lambda s: core.view_selection_energy(s, config.min_views))(
            rows.view_weights) * (counts >= config.min_views))  # the core leaves it out below min_views views
    return {name: compute[name]() for name in wanted if name in compute}


@dataclass
class _Record:
    """A stage's per-iteration values on the device, read once at its end: sums (T, B), terms, skips (T, J)."""

    names: list[tuple[str, ...]]
    values: list[torch.Tensor]
    steps: list[torch.Tensor]

    def histories(self, stage_name: str, batch: _Batch, config: FitConfig, owner: np.ndarray) -> list[StageHistory]:
        jobs = len(batch.problems)
        if not self.values:
            return [StageHistory(stage_name, np.zeros(0, np.float32), _frozen({})) for _ in range(jobs)]
        flat = torch.cat([value.reshape(-1) for value in self.values]).cpu().numpy()
        steps = torch.stack(self.steps).cpu().numpy()  # (T, J) bool
        histories = []
        for job in range(jobs):
            mine = np.flatnonzero(owner == job)
            selection = config.learn_view_weights and batch.views[job] >= config.min_views
            totals, per_term, offset = [], {}, 0
            for names in self.names:
                block = flat[offset: offset + (len(names) + 1) * len(owner)].reshape(len(names) + 1, len(owner))
                offset += block.size
                sums = block[0, mine]
                best = mine[int(np.argmin(np.where(np.isnan(sums), np.inf, sums)))]
                totals.append(block[0, best])
                for position, name in enumerate(names):
                    if name != "view_selection" or selection:
                        per_term.setdefault(name, []).append(block[position + 1, best])
            histories.append(StageHistory(stage_name, np.asarray(totals, np.float32),
                                          _frozen({n: np.asarray(v, np.float32) for n, v in per_term.items()}),
                                          int((~steps[:, job]).sum())))
        return histories


def _run_stage(batch: _Batch, config: FitConfig, extra: dict[str, ExtraTerm], variables: dict, owner: torch.Tensor,
               index: int, report: Callable[[int], None]) -> tuple[list[StageHistory], torch.Tensor]:
    """Optimise one stage for every row in place (the core's ``_run_stage`` per job); returns each job's
    history and each row's last total (B,)."""
    stage = config.stages[index]
    names = [name for name in stage.optimise if name != "view_logits" or config.learn_view_weights]
    leaves = [variables[name].requires_grad_(True) for name in names]
    jobs, rows_count = len(batch.problems), variables["transl"].shape[0]
    membership = owner[None] == torch.arange(jobs, device=owner.device)[:, None]  # (J, B)
    record = _Record([], [], [])
    last = torch.zeros(rows_count, dtype=variables["transl"].dtype, device=owner.device)
    if leaves and stage.iterations:
        optimiser = RowAdamW(leaves, stage.lr, config.weight_decay)
        active_extra = {name: term for name, term in extra.items() if _weighs(term.weights[index])}
        need_vertices = any(term.needs_vertices for term in active_extra.values())
        for step in range(stage.iterations):
            weights = {name: _weight_at(w, step, stage.iterations) for name, w in stage.weights.items()}
            wanted = tuple(name for name, weight in weights.items() if weight != 0.0)
            rows = _rows(batch, config, variables, owner, index, step, need_vertices)
            terms = {name: value * weights[name]
                     for name, value in _energies(batch, config, stage.keypoints, rows, wanted).items()}
            for name, term in active_extra.items():
                value = term.fn(rows)
                if not isinstance(value, torch.Tensor) or value.shape != (rows_count,):
                    raise TypeError(f"extra term {name!r} must return one value per row, shape ({rows_count},)")
                terms[name] = value * _weight_at(term.weights[index], step, stage.iterations)
            # in the core's order (a Python sum per row); no term at all: zeros that still reach the leaves
            sums = (functools.reduce(operator.add, terms.values()) if terms
                    else leaves[0].reshape(rows_count, -1).sum(-1) * 0)
            # the SUM over rows: each row's gradient is its own total's (a mean would scale it by 1 / B)
            grads = torch.autograd.grad(sums.sum(), leaves, allow_unused=True)
            grads = [torch.zeros_like(leaf) if grad is None else grad for grad, leaf in zip(grads, leaves)]
            finite_rows = torch.isfinite(sums)
            for grad in grads:
                finite_rows = finite_rows & torch.isfinite(grad).reshape(rows_count, -1).all(-1)
            finite_jobs = ~(membership & ~finite_rows[None]).any(-1)  # a job steps when all its rows are finite
            optimiser.step(grads, finite_jobs[owner])
            last = sums.detach()
            record.names.append(tuple(terms))
            record.values.append(torch.stack([last, *(value.detach() for value in terms.values())]))
            record.steps.append(finite_jobs)
            report(step + 1)
    for leaf in leaves:
        leaf.requires_grad_(False)
    return record.histories(stage.name, batch, config, owner.cpu().numpy()), last


def _keep_best(variables: dict, owner: torch.Tensor, last: torch.Tensor, jobs: int) -> dict:
    """Each job's row with the lowest last total (NaN counts as infinite), in job order."""
    scores = torch.where(owner[None] == torch.arange(jobs, device=owner.device)[:, None],
                         torch.nan_to_num(last, nan=float("inf"))[None], torch.full_like(last, float("inf"))[None])
    best = scores.argmin(-1)
    return {name: value[best].detach().clone() for name, value in variables.items()}


def fit_bodies(body: BodyModel, jobs: Sequence[Job], *, config: FitConfig, vposer=None,
               extra_terms: dict[str, ExtraTerm] | None = None, vertex_subset=None,
               progress: Callable[[float, str], object] | None = None) -> list[BodyFit]:
    """``fit_body`` of every job, optimised together; result i equals ``fit_body`` of job i alone.

    The extra terms take ``Rows`` (their ``subset_vertices`` or ``vertices``) and return (B,).
    """
    if not jobs:
        raise InputError("no body to lift: give at least one job")
    problems, layouts = [], set()
    for number, job in enumerate(jobs):
        try:
            problem, views = _prepare(body, list(job.keypoints), job.cameras, config, vposer, None, vertex_subset)
        except InputError as error:
            raise InputError(f"job {number}: {error}") from None
        problems.append(problem)
        layouts.add(views[0].layout)
    if len(layouts) != 1:
        raise InputError(f"every job must use the same keypoint layout, got {sorted(layouts)}")
    batch = _Batch.build(problems)
    extra = _check_extra_terms(extra_terms, config)
    # Start: each job's own hypotheses (the core's initialisation), stacked; view logits padded with 0.
    starts = [_initial_variables(problem, job.init, config) for problem, job in zip(problems, jobs)]
    width = batch.view_mask.shape[1]
    for start in starts:
        start["view_logits"] = torch.nn.functional.pad(start["view_logits"], (0, width - start["view_logits"].shape[1]))
    variables = {name: torch.cat([start[name] for start in starts]) for name in starts[0]}
    owner = torch.cat([torch.full((start["transl"].shape[0],), job, dtype=torch.long)
                       for job, start in enumerate(starts)]).to(batch.view_mask.device)
    total = max(sum(stage.iterations for stage in config.stages), 1)
    done, histories = 0, [[] for _ in jobs]
    for index, stage in enumerate(config.stages):
        report = (lambda step, done=done, stage=stage:
                  progress((done + step) / total, stage.name) if progress is not None else None)
        stage_histories, last = _run_stage(batch, config, extra, variables, owner, index, report)
        for history, stage_history in zip(histories, stage_histories):
            history.append(stage_history)
        if index + 1 >= config.select_after or index + 1 == len(config.stages):
            variables = _keep_best(variables, owner, last, len(jobs))
            owner = torch.arange(len(jobs), device=owner.device)
        done += stage.iterations
    # Pose each job's whole body once with its final parameters (the core's result).
    results = []
    for job, problem in enumerate(problems):
        own = {name: value[job:job + 1] for name, value in variables.items()}
        own["view_logits"] = own["view_logits"][:, : batch.views[job]]
        results.append(_result(problem, config, own, histories[job], layouts.copy().pop()))
    return results
