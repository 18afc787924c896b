"""Batched lifting (``lifting.lift_many``, ``engine.genzi.batch``) against the fitting core's loop run on each
job alone: the per-row optimiser against torch's AdamW, the batched energies against one body at a time, and
whole lifts (stage 0 with orientation hypotheses and different view counts, stage 1 warm-started with
self-penetration, VPoser, a skipped iteration) compared on final parameters, energies and histories."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.fitting.fit import BodyInit, cpu_threads, fit_body
from engine.fitting.keypoints import Keypoints2D
from engine.genzi import batch, energies, lifting, scenes, sdf as sdf_module
from engine.genzi.lifting import LiftConfig, LiftJob, lift, lift_many
from engine.genzi.synthetic import sofa_case

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fitting"))
from vposer_fakes import write_tiny_vposer  # noqa: E402

SUBSET = (0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13)  # 11 of the 16 views, the wrong view 3 among them


@pytest.fixture(scope="module")
def sofa(open_body, tmp_path_factory):
    sdf = sdf_module.scene_sdf(scenes.builtin_scene("living_room"), dim=48, cache=tmp_path_factory.mktemp("sdf"))
    return sdf, sofa_case(open_body, sdf)


def _cameras(cameras, ids=None, dtype=torch.float32):
    ids = list(range(len(cameras))) if ids is None else list(ids)
    return type(cameras)(cameras.K[ids].to(dtype), cameras.R[ids].to(dtype), cameras.t[ids].to(dtype))


def _jobs(case, dtype=torch.float32, init=None):
    """Three jobs: all 16 views, 11 of them, and the last 5 (so the batch pads 11 and 5 views to 16)."""
    picks = (range(16), SUBSET, range(11, 16))
    return [LiftJob(tuple(case.keypoints[i] for i in ids), _cameras(case.cameras, ids, dtype), init) for ids in picks]


def assert_same_fit(alone, batched, atol, pixels=1e-3):
    """Parameters, joints and vertices within ``atol`` (metres, radians), the projections within ``pixels``,
    and every stage's history (the best hypothesis's total and terms per iteration, the skips)."""
    for name in ("transl", "global_orient", "body_pose", "betas", "view_weights", "joints", "vertices"):
        np.testing.assert_allclose(getattr(batched, name), getattr(alone, name), atol=atol, rtol=0, err_msg=name)
    np.testing.assert_allclose(batched.projected, alone.projected, atol=pixels, rtol=0)
    if alone.latent is not None:
        np.testing.assert_allclose(batched.latent, alone.latent, atol=atol, rtol=0)
    assert len(batched.history) == len(alone.history) == 4
    for one, other in zip(alone.history, batched.history):
        assert one.name == other.name and one.skipped == other.skipped
        np.testing.assert_allclose(other.total, one.total, atol=atol, rtol=1e-5, err_msg=one.name)
        assert set(one.terms) == set(other.terms), one.name
        for term in one.terms:
            assert len(one.terms[term]) == len(other.terms[term]), term
            np.testing.assert_allclose(other.terms[term], one.terms[term], atol=atol, rtol=1e-5, err_msg=term)


# ------------------------------------------------------------------------------------- the optimiser
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_row_adamw_is_torch_adamw_on_each_row(weight_decay):
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(3, 5, dtype=torch.float64, generator=generator)
    grads = torch.randn(12, 3, 5, dtype=torch.float64, generator=generator) * torch.tensor([1.0, 1e-3, 10.0])[:, None]
    rows = start.clone()
    ours = batch.RowAdamW([rows], lr=0.01, weight_decay=weight_decay)
    alone = [start[r].clone().requires_grad_(True) for r in range(3)]
    kind = torch.optim.AdamW if weight_decay else torch.optim.Adam
    torch_optimisers = [kind([p], lr=0.01, weight_decay=weight_decay) for p in alone]
    skipped = {(4, 1), (5, 1), (9, 2)}  # row 1 skips steps 4 and 5, row 2 step 9: its grad there is NaN
    for step in range(len(grads)):
        grad = grads[step].clone()
        grad[2] = float("nan") if (step, 2) in skipped else grad[2]
        active = torch.tensor([(step, r) not in skipped for r in range(3)])
        ours.step([grad], active)
        for r in range(3):
            if (step, r) not in skipped:
                alone[r].grad = grads[step, r].clone()
                torch_optimisers[r].step()
    expected = torch.stack([p.detach() for p in alone])
    np.testing.assert_allclose(rows.numpy(), expected.numpy(), rtol=0, atol=1e-14)
    assert ours.steps.tolist() == [12.0, 10.0, 11.0]


# ------------------------------------------------------------------------------------- the energies
def test_scene_and_self_penetration_per_row_equal_each_body_alone(open_body):
    generator = torch.Generator().manual_seed(1)
    sdf = torch.rand(4, 50, generator=generator) * 0.2 - 0.02
    sdf[1] = sdf[1].abs() + 0.001  # nothing penetrates: contact on, penetration zero
    sdf[3, 7] = -0.3
    sdf.requires_grad_(True)
    for fn in (energies.scene_penetration, energies.scene_contact):
        rows = fn(sdf, -0.01)
        (gradient,) = torch.autograd.grad(rows.sum(), sdf)
        assert rows.shape == (4,)
        for r in range(4):
            one = sdf[r].detach().clone().requires_grad_(True)
            value = fn(one, -0.01)
            value.backward()
            assert float(value.detach()) == pytest.approx(float(rows[r].detach()), abs=1e-7)
            np.testing.assert_allclose(gradient[r].numpy(), one.grad.numpy(), atol=1e-7)
    assert float(energies.scene_penetration(sdf, -0.01)[1]) == 0.0
    assert float(energies.scene_contact(sdf, -0.01)[1]) == pytest.approx(float(sdf[1].min()) + 0.01)
    ids = lifting.scene_vertex_ids(open_body)
    capsules = energies.fit_part_capsules(open_body.v_template.numpy()[ids.numpy()],
                                          energies.body_part_labels(open_body)[ids.numpy()])
    poses = torch.zeros(3, 63)
    poses[1, 15 * 3 + 2], poses[1, 18 * 3 + 1] = -1.2, -2.4  # left shoulder and elbow: the hand in the chest
    poses[2] = torch.randn(63, generator=generator) * 0.4
    with torch.no_grad():
        vertices = open_body(body_pose=poses).vertices[:, ids]
    rows = energies.self_penetration(vertices, capsules)
    alone = torch.stack([energies.self_penetration(v, capsules) for v in vertices])
    np.testing.assert_allclose(rows.numpy(), alone.numpy(), rtol=1e-6, atol=1e-12)
    assert float(rows[0]) == 0.0 and float(rows[1]) > 0


# ------------------------------------------------------------------------------------- whole lifts
def test_lift_many_equals_lift_of_each_job_alone(open_body, sofa):
    """Stage 0: 3 jobs x 4 orientation hypotheses (12 rows in phase 1), 16, 11 and 5 views; float32, 4 x 6 iterations."""
    sdf, case = sofa
    config = LiftConfig(phase_iterations=6)
    jobs = _jobs(case)
    batched = lift_many(open_body, jobs, sdf, case.selection.point.nearest, config=config)
    for job, fit in zip(jobs, batched):
        alone = lift(open_body, list(job.keypoints), job.cameras, sdf, case.selection.point.nearest, config=config)
        assert_same_fit(alone, fit, atol=2e-5)
        assert fit.view_weights.shape == (len(job.keypoints),) and fit.view_weights.sum() == pytest.approx(1)


@pytest.mark.slow
def test_lift_many_equals_lift_over_a_longer_schedule_in_float64(open_body, sofa):
    """float64 (so the contact / penetration switch sees no rounding difference), 4 x 40 iterations, stage 0
    and stage 1 (warm starts, one hypothesis each, self-penetration on): equal to float32 resolution."""
    from engine.body import load_body

    sdf, case = sofa
    body = load_body("openbody").double()
    point = case.selection.point.nearest
    stage0 = LiftConfig(phase_iterations=40)
    jobs = _jobs(case, torch.float64)
    first = lift_many(body, jobs, sdf, point, config=stage0)
    for job, fit in zip(jobs, first):
        assert_same_fit(lift(body, list(job.keypoints), job.cameras, sdf, point, config=stage0), fit, atol=1e-6)
    stage1 = dataclasses.replace(stage0, self_penetration=True, orientation_hypotheses=1)
    warm = [dataclasses.replace(job, init=BodyInit(transl=fit.transl, global_orient=fit.global_orient,
                                                   body_pose=fit.body_pose, betas=fit.betas))
            for job, fit in zip(jobs, first)]
    second = lift_many(body, warm[:2], sdf, point, config=stage1)
    assert "self_penetration" in second[0].history[3].terms
    for job, fit in zip(warm[:2], second):
        assert_same_fit(lift(body, list(job.keypoints), job.cameras, sdf, point, config=stage1, init=job.init),
                        fit, atol=1e-6)


def test_lift_many_with_vposer_equals_lift(open_body, sofa, tmp_path):
    from engine.fitting.priors import load_vposer

    write_tiny_vposer(tmp_path)
    vposer = load_vposer(tmp_path)
    sdf, case = sofa
    config = LiftConfig(phase_iterations=4, orientation_hypotheses=2)
    jobs = _jobs(case)[1:]
    batched = lift_many(open_body, jobs, sdf, case.selection.point.nearest, vposer=vposer, config=config)
    for job, fit in zip(jobs, batched):
        alone = lift(open_body, list(job.keypoints), job.cameras, sdf, case.selection.point.nearest, vposer=vposer,
                     config=config)
        assert fit.prior == "vposer"
        assert_same_fit(alone, fit, atol=2e-5)


def test_a_non_finite_iteration_skips_only_its_own_job(open_body, sofa):
    """A term that is NaN for the 11-view job at phase 2's 3rd iteration: that job skips that step (as the
    core skips it when the job runs alone); the other job's rows go on untouched."""
    sdf, case = sofa
    config = LiftConfig(phase_iterations=5)

    def flaky(state):
        views = state.view_mask.sum(-1) if isinstance(state, batch.Rows) else torch.tensor(float(len(state.cameras)))
        zero = state.transl.sum(-1) * 0
        return torch.where((views == len(SUBSET)) & (state.stage == 1) & (state.iteration == 2),
                           torch.full_like(zero, float("nan")), zero)

    terms = {**lifting.scene_terms(sdf, open_body, config), "flaky": (flaky, (1.0,) * 4)}
    fit_config = lifting.fit_config(open_body, "open-body", config)
    jobs, point = _jobs(case)[:2], case.selection.point.nearest
    starts = [batch.Job(tuple(lifting.only_genzi_joints(k) for k in job.keypoints), job.cameras,
                        BodyInit(transl=lifting.initial_translation(job.cameras, point))) for job in jobs]
    ids = lifting.scene_vertex_ids(open_body)
    with cpu_threads(1, "cpu"):
        batched = batch.fit_bodies(open_body, starts, config=fit_config, extra_terms=terms, vertex_subset=ids)
        for job, fit in zip(starts, batched):
            alone = fit_body(open_body, list(job.keypoints), job.cameras, config=fit_config, init=job.init,
                             extra_terms=terms, vertex_subset=ids)
            assert_same_fit(alone, fit, atol=2e-5)
    assert [fit.history[1].skipped for fit in batched] == [0, 1]


# ------------------------------------------------------------------------------------- bad input
def test_lift_many_refuses_bad_jobs(open_body, sofa):
    sdf, case = sofa
    point = case.selection.point.nearest
    with pytest.raises(InputError, match="no inpainting set to lift"):
        lift_many(open_body, [], sdf, point)
    good = _jobs(case)[2]
    with pytest.raises(InputError, match="job 1: 5 keypoint views but 3 cameras"):
        lift_many(open_body, [good, dataclasses.replace(good, cameras=_cameras(case.cameras, [0, 1, 2]))], sdf, point)
    with pytest.raises(InputError, match="job 0: no view was accepted"):
        lift_many(open_body, [LiftJob((), _cameras(case.cameras, [])), good], sdf, point)
    coco = Keypoints2D(xy=np.zeros((17, 2), np.float32), confidence=np.ones(17, np.float32), image_size=(512, 512),
                       layout="coco17")
    mixed = [batch.Job(good.keypoints, good.cameras, BodyInit()),
             batch.Job((coco,), _cameras(case.cameras, [0]), BodyInit())]
    with pytest.raises(InputError, match="same keypoint layout"):
        batch.fit_bodies(open_body, mixed, config=lifting.fit_config(open_body, "open-body"))
    with pytest.raises(InputError, match="no body to lift"):
        batch.fit_bodies(open_body, [], config=lifting.fit_config(open_body, "open-body"))


def test_the_batched_loop_creates_no_tensor_on_the_default_device(open_body, sofa, monkeypatch):
    """What a CPU run cannot show for CUDA: inside the optimiser loop every tensor is made on the inputs'
    device (a tensor made on the default device would meet CUDA tensors there). The loop runs with the
    default device set to ``meta``, where any such tensor fails; the SDF sample (the same code as the
    sequential lifting, whose ``as_tensor`` the meta default would move) runs outside it."""
    sdf, case = sofa

    class OutsideMeta:
        def __call__(self, points):
            torch.set_default_device(None)
            try:
                return sdf(points)
            finally:
                torch.set_default_device("meta")

    run_stage = batch._run_stage

    def on_meta(*args, **kwargs):
        torch.set_default_device("meta")
        try:
            return run_stage(*args, **kwargs)
        finally:
            torch.set_default_device(None)

    monkeypatch.setattr(batch, "_run_stage", on_meta)
    config = LiftConfig(phase_iterations=2, self_penetration=True)
    fits = lift_many(open_body, _jobs(case)[1:], OutsideMeta(), case.selection.point.nearest, config=config)
    assert all(np.isfinite(fit.vertices).all() for fit in fits)
    assert "self_penetration" in fits[0].history[3].terms
