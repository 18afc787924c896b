"""Keypoint fitting: the acceptance cases (known open-body pose, 2 px noise), extra terms, progress, bad input."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.body.skeleton import BODY_JOINT_NAMES
from engine.errors import InputError
from engine.fitting import energies
from engine.fitting.fit import DEFAULT_STAGES, BodyInit, ExtraTerm, FitConfig, StageConfig, fit_body, photo_camera
from engine.fitting.keypoints import Keypoints2D
from engine.fitting.priors import load_vposer
from engine.fitting.synthetic import WALK_AND_REACH, body_pose_from, orbit_cameras, synthetic_views
from vposer_fakes import LATENT, write_tiny_vposer

ORIENT, TRANSL = (0.1, 0.5, 0.05), (0.2, 0.1, 0.3)  # the body faces 29 degrees to its left of +Z
QUICK = FitConfig(stages=(dataclasses.replace(DEFAULT_STAGES[0], iterations=5),
                          dataclasses.replace(DEFAULT_STAGES[1], iterations=5)), orientation_hypotheses=2)


def _views(body, azimuths, **kwargs):
    return synthetic_views(body, orbit_cameras(azimuths), body_pose_from(WALK_AND_REACH), ORIENT, TRANSL, **kwargs)


@pytest.fixture(scope="module")
def single_view_fits(open_body):
    """Two three-quarter views (the camera 60 and 90 degrees off the body's facing direction)."""
    fits = []
    for azimuth in (90.0, -60.0):
        scene = _views(open_body, [azimuth], seed=1)
        fits.append((scene, fit_body(open_body, scene.keypoints, orbit_cameras([azimuth]))))
    return fits


@pytest.mark.slow
def test_single_view_pa_mpjpe_and_2d_error(single_view_fits):
    for scene, fit in single_view_fits:
        truth = torch.as_tensor(scene.joints)
        assert float(energies.pa_mpjpe(torch.as_tensor(fit.joints), truth)) <= 0.03
        assert fit.reprojection_error_px.mean() <= 3.0  # against the noisy keypoints
        assert np.linalg.norm(fit.projected - scene.clean, axis=-1).mean() <= 3.0  # against the true projections


@pytest.mark.slow
def test_four_views_mpjpe(open_body):
    azimuths = [20.0, 110.0, 200.0, 290.0]
    scene = _views(open_body, azimuths, seed=2)
    fit = fit_body(open_body, scene.keypoints, orbit_cameras(azimuths))
    assert float(energies.mpjpe(torch.as_tensor(fit.joints), torch.as_tensor(scene.joints))) <= 0.02
    assert fit.vertices.shape == (open_body.num_vertices, 3) and fit.view_weights == pytest.approx([0.25] * 4)
    # the returned parameters reproduce the returned joints through the body model itself
    with torch.no_grad():
        again = open_body(**{k: torch.as_tensor(v) for k, v in fit.body_params().items()})
    np.testing.assert_allclose(again.joints[0].numpy(), fit.joints, atol=1e-4)
    np.testing.assert_allclose(again.vertices[0].numpy(), fit.vertices, atol=1e-4)


def test_history_progress_and_extra_terms(open_body):
    scene = _views(open_body, [90.0, 180.0], seed=3)
    calls, seen = [], {}
    target_height = float(scene.joints[0, 1]) + 0.15  # lift the pelvis 15 cm above what the keypoints say

    def pelvis_height(state):
        seen["vertices"] = None if state.vertices is None else tuple(state.vertices.shape)
        return (state.joints[0, 1] - target_height) ** 2

    config = dataclasses.replace(QUICK, stages=QUICK.stages + (dataclasses.replace(DEFAULT_STAGES[2], iterations=60, lr=0.05),))
    fit = fit_body(open_body, scene.keypoints, orbit_cameras([90.0, 180.0]), config=config,
                   extra_terms={"pelvis_height": ExtraTerm(pelvis_height, (0.0, 0.0, (1e6, 1e6)), needs_vertices=False)},
                   progress=lambda fraction, desc: calls.append((fraction, desc)))
    assert abs(fit.joints[0, 1] - target_height) < 0.03  # the extra term won over the keypoints (to Adam jitter)
    assert seen["vertices"] is None
    assert [h.name for h in fit.history] == [s.name for s in config.stages]
    assert len(fit.history[2].total) == 60 and "pelvis_height" in fit.history[2].terms
    assert "pelvis_height" not in fit.history[0].terms
    fractions = [fraction for fraction, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0) and len(calls) == 70
    assert calls[0][1] == config.stages[0].name


def test_extra_term_tuple_form_sees_all_vertices_and_learned_view_weights(open_body):
    scene = _views(open_body, [0.0, 90.0, 180.0], seed=4)
    shapes = []
    config = dataclasses.replace(QUICK, learn_view_weights=True,
                                 stages=tuple(dataclasses.replace(s, optimise=s.optimise + ("view_logits",),
                                                                  weights={**s.weights, "view_selection": 1.0})
                                              for s in QUICK.stages))
    fit = fit_body(open_body, scene.keypoints, orbit_cameras([0.0, 90.0, 180.0]), config=config,
                   extra_terms={"floor": (lambda state: shapes.append(tuple(state.vertices.shape)) or
                                          torch.relu(-1.5 - state.vertices[:, 1]).sum(), (1.0, 1.0))})
    assert set(shapes) == {(open_body.num_vertices, 3)}
    assert "view_selection" in fit.history[1].terms and fit.view_weights.sum() == pytest.approx(1.0)


def test_vposer_latent_fit(open_body, tmp_path):
    write_tiny_vposer(tmp_path)
    vposer = load_vposer(tmp_path)
    scene = _views(open_body, [90.0], seed=5)
    fit = fit_body(open_body, scene.keypoints, orbit_cameras([90.0]), config=QUICK, vposer=vposer)
    assert fit.prior == "vposer" and fit.latent.shape == (LATENT,)
    decoded = vposer.decode_axis_angle(torch.as_tensor(fit.latent)[None])[0].numpy()
    np.testing.assert_allclose(fit.body_pose, decoded, atol=1e-5)
    start = vposer.encode_mean(torch.zeros(1, 63))[0].numpy()  # the latent starts at the rest pose's code
    assert np.isfinite(fit.history[1].total).all() and np.abs(fit.latent - start).max() > 1e-3
    assert "pose_prior" in fit.history[1].terms


def test_smplx_family_body_fits_coco_keypoints(smplx_models_dir):
    from engine.body import load_body

    body = load_body("smplx", smplx_models_dir)
    scene = synthetic_views(body, orbit_cameras([60.0]), body_pose_from({"left_knee": (0.5, 0, 0)}), layout="coco17")
    config = FitConfig(stages=(dataclasses.replace(DEFAULT_STAGES[0], iterations=30),
                               dataclasses.replace(DEFAULT_STAGES[2], iterations=40)))
    fit = fit_body(body, scene.keypoints, orbit_cameras([60.0]), config=config, init=BodyInit(global_orient=np.zeros(3)))
    assert fit.topology == "smplx-10475" and fit.keypoints_3d.shape == (17, 3) and fit.body_pose.shape == (63,)
    assert fit.vertices.shape == (10475, 3) and np.isfinite(fit.vertices).all()
    assert fit.reprojection_error_px.mean() < 3.5  # 2 px noise per axis: 2.5 px is the floor for the truth


def test_photo_camera_sees_an_upright_body_facing_it(open_body):
    camera = photo_camera((480, 640), fov_deg=60)
    assert float(camera.K[0, 0, 0]) == pytest.approx(320 / np.tan(np.radians(30)))
    with torch.no_grad():
        joints = open_body(transl=torch.tensor([[0.0, 0.0, -3.0]])).joints[0]
    uv = camera.project(joints)[0, :, :2]
    index = BODY_JOINT_NAMES.index
    assert uv[index("head"), 1] < uv[index("pelvis"), 1]  # head above the pelvis in the image
    assert uv[index("left_shoulder"), 0] > uv[index("right_shoulder"), 0]  # facing the camera: its left on our right
    with pytest.raises(InputError, match="focal"):
        photo_camera((480, 640), focal_px=-1.0)


# ------------------------------------------------------------------------------------------ bad input
def _one_view(open_body):
    return _views(open_body, [90.0]).keypoints[0]


@pytest.mark.parametrize("xy, confidence, layout, message", [
    (np.full((17, 2), np.nan), np.ones(17), "coco17", "NaN"),
    (np.zeros((17, 3)), np.ones(17), "coco17", r"\(17, 2\)"),
    (np.zeros((17, 2)), np.ones(16), "coco17", r"\(17,\)"),
    (np.zeros((17, 2)), np.full(17, 2.0), "coco17", "within"),
    (np.zeros((17, 2)), np.zeros(17), "coco17", "nothing to fit"),
    (np.zeros((22, 2)), np.ones(22), "halpe", "unknown keypoint layout"),
])
def test_bad_keypoints(xy, confidence, layout, message):
    with pytest.raises(InputError, match=message):
        Keypoints2D(xy=xy, confidence=confidence, image_size=(512, 512), layout=layout)


def test_bad_image_size_and_a_non_scalar_extra_term(open_body):
    with pytest.raises(InputError, match="image_size"):
        Keypoints2D(np.zeros((17, 2)), np.ones(17), (512, 0))
    with pytest.raises(TypeError, match="scalar"):
        fit_body(open_body, _one_view(open_body), orbit_cameras([90.0]), config=QUICK,
                 extra_terms={"x": (lambda state: state.joints, (1.0, 1.0))})


def test_bad_fit_arguments(open_body):
    view = _one_view(open_body)
    camera = orbit_cameras([90.0])
    with pytest.raises(InputError, match="one camera per view"):
        fit_body(open_body, [view, view], camera, config=QUICK)
    with pytest.raises(InputError, match="NaN"):
        fit_body(open_body, view, dataclasses.replace(camera, K=camera.K * float("nan")), config=QUICK)
    with pytest.raises(InputError, match="positive"):
        fit_body(open_body, view, dataclasses.replace(camera, K=-camera.K), config=QUICK)
    with pytest.raises(InputError, match="same keypoint layout"):
        coco = Keypoints2D(np.zeros((17, 2)), np.ones(17), (512, 512))
        fit_body(open_body, [view, coco], orbit_cameras([90.0, 0.0]), config=QUICK)
    with pytest.raises(InputError, match="Keypoints2D"):
        fit_body(open_body, np.zeros((22, 2)), camera, config=QUICK)
    with pytest.raises(InputError, match="BodyModel"):
        fit_body("openbody", view, camera, config=QUICK)
    with pytest.raises(InputError, match="initial transl"):
        fit_body(open_body, view, camera, config=QUICK, init=BodyInit(transl=np.array([np.nan, 0, 0])))
    with pytest.raises(InputError, match="shape_weights"):
        fit_body(open_body, view, camera, config=dataclasses.replace(QUICK, shape_weights=(1.0,) * 5))
    with pytest.raises(InputError, match="2 weights for 2 stages|weights for"):
        fit_body(open_body, view, camera, config=QUICK, extra_terms={"x": (lambda s: s.joints.sum(), (1.0,))})
    with pytest.raises(InputError, match="clashes"):
        fit_body(open_body, view, camera, config=QUICK, extra_terms={"reprojection": (lambda s: 0, (1.0, 1.0))})
    with pytest.raises(InputError, match=r"ExtraTerm\(fn, weights\)"):
        fit_body(open_body, view, camera, config=QUICK, extra_terms={"x": "not a term"})


def test_bad_configs():
    with pytest.raises(InputError, match="unknown variables"):
        StageConfig("s", 10, 0.1, ("transl", "camera"), {})
    with pytest.raises(InputError, match="unknown energies"):
        StageConfig("s", 10, 0.1, ("transl",), {"scene": 1.0})
    with pytest.raises(InputError, match="lr > 0"):
        StageConfig("s", 10, 0.0, ("transl",), {})
    with pytest.raises(InputError, match="at least one stage"):
        FitConfig(stages=())
    with pytest.raises(InputError, match="rho"):
        FitConfig(rho=0.0)


def test_a_diverging_term_is_skipped_not_propagated(open_body):
    view = _one_view(open_body)
    fit = fit_body(open_body, view, orbit_cameras([90.0]), config=QUICK,
                   extra_terms={"broken": ExtraTerm(lambda state: state.joints.sum() * float("nan"), (0.0, 1.0), False)})
    assert fit.history[1].skipped == 5 and np.isfinite(fit.joints).all()


def test_vertex_subset_is_posed_like_the_whole_mesh_and_zero_weighted_terms_are_skipped(open_body):
    scene = _views(open_body, [90.0, 180.0], seed=5)
    ids = torch.arange(3, open_body.num_vertices, 97)
    gaps, stages_called = [], []

    def compare(state):
        gaps.append(float((state.vertices[ids] - state.subset_vertices).abs().max()))
        return state.subset_vertices[:, 1].mean() * 0.0

    def never_weighted(state):
        stages_called.append(state.stage)
        return state.joints.sum() * 0.0

    fit_body(open_body, scene.keypoints, orbit_cameras([90.0, 180.0]), config=QUICK, vertex_subset=ids.numpy(),
             extra_terms={"compare": ExtraTerm(compare, (1.0, 1.0)),
                          "never": ExtraTerm(never_weighted, ((0.0, 0.0), 1.0), needs_vertices=False)})
    assert len(gaps) == 2 * (5 + 5) and max(gaps) < 1e-5  # 2 hypotheses side by side in both stages
    assert set(stages_called) == {1}  # (0, 0) in stage 0: never evaluated there
    for bad, message in ((np.array([0, open_body.num_vertices]), "must lie in"), (np.zeros((2, 2), int), "1-D"),
                         (np.array([], int), "non-empty"), (np.array([0.5]), "indices")):
        with pytest.raises(InputError, match=message):
            fit_body(open_body, scene.keypoints, orbit_cameras([90.0, 180.0]), config=QUICK, vertex_subset=bad)


def test_cpu_threads_are_set_for_the_block_and_restored():
    from engine.fitting.fit import cpu_threads

    before = torch.get_num_threads()
    with cpu_threads(1, "cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads(None, "cpu"):
        assert torch.get_num_threads() == before
    with pytest.raises(InputError, match="positive integer"):
        with cpu_threads(0, "cpu"):
            pass
