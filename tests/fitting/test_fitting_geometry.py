"""Rotations, energies, projection and the joints-only kinematics against hand cases and brute force."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.body import load_body
from engine.fitting import energies
from engine.fitting.kinematics import sites_forward
from engine.fitting.keypoints import COCO17_NAMES, keypoint_sites
from engine.fitting.rotations import (axis_angle_to_matrix, columns_6d_to_matrix, matrix_to_axis_angle,
                                      matrix_to_rotation_6d, rotation_6d_to_matrix, rotation_about_y)
from engine.render.cameras import FoVPerspectiveCamera, OpenCVCamera


def _random_axis_angle(count, seed=0, max_angle=math.pi):
    generator = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator, dtype=torch.float64), dim=-1)
    return axis * torch.rand(count, 1, generator=generator, dtype=torch.float64) * max_angle


def test_6d_round_trip_and_layouts():
    matrices = axis_angle_to_matrix(_random_axis_angle(50))
    np.testing.assert_allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(matrices)), matrices, atol=1e-7)  # smplx adds 1e-8 to angles
    # the VPoser layout holds the first two columns interleaved: (m00, m01, m10, m11, m20, m21)
    interleaved = matrices[:, :, :2].reshape(50, 6)
    np.testing.assert_allclose(columns_6d_to_matrix(interleaved), matrices, atol=1e-7)
    # Gram-Schmidt: a non-orthogonal 6D vector still yields a rotation
    raw = rotation_6d_to_matrix(torch.tensor([[2.0, 0.0, 0.0, 1.0, 3.0, 0.0]], dtype=torch.float64))[0]
    np.testing.assert_allclose(raw, torch.eye(3, dtype=torch.float64), atol=1e-12)


def test_matrix_to_axis_angle_inverts_rodrigues_including_near_0_and_pi():
    cases = torch.cat([_random_axis_angle(200),
                       torch.tensor([[0.0, 0, 0], [1e-7, 0, 0], [0, 0, math.pi - 1e-6], [0, math.pi, 0],
                                     [2.0, -1.0, 0.5]], dtype=torch.float64)])
    recovered = matrix_to_axis_angle(axis_angle_to_matrix(cases))
    np.testing.assert_allclose(axis_angle_to_matrix(recovered), axis_angle_to_matrix(cases), atol=1e-6)
    inside = cases.norm(dim=-1) < math.pi - 1e-3
    np.testing.assert_allclose(recovered[inside], cases[inside], atol=1e-6)


def test_axis_angle_gradient_is_finite_at_identity():
    d6 = matrix_to_rotation_6d(torch.eye(3))[None].clone().requires_grad_(True)
    matrix_to_axis_angle(rotation_6d_to_matrix(d6)).sum().backward()
    assert torch.isfinite(d6.grad).all()


def test_rotation_about_y_turns_forward_to_the_left():
    np.testing.assert_allclose(rotation_about_y(math.pi / 2) @ torch.tensor([0.0, 0, 1]), [1.0, 0, 0], atol=1e-6)


def test_gmof_by_hand():
    r = torch.tensor([0.0, 1.0, 10.0, 1e4])
    np.testing.assert_allclose(energies.gmof(r, 10.0), [0.0, 100 / 101, 50.0, 100 * 1e8 / (1e8 + 100)], rtol=1e-6)


def test_reprojection_energy_by_hand():
    projected = torch.tensor([[[0.0, 0.0], [3.0, 4.0]], [[1.0, 0.0], [0.0, 0.0]]])
    target = torch.zeros(2, 2, 2)
    confidence = torch.tensor([[1.0, 0.5], [1.0, 0.0]])
    rho = 5.0
    g = lambda r: rho ** 2 * r ** 2 / (r ** 2 + rho ** 2)
    view0, view1 = 0.5 * (g(3.0) + g(4.0)), g(1.0)
    got = energies.reprojection_energy(projected, target, confidence, rho, torch.tensor([3.0, 1.0]))
    assert float(got) == pytest.approx(0.75 * view0 + 0.25 * view1, rel=1e-6)
    assert float(energies.reprojection_energy(projected, target, confidence, rho)) == pytest.approx(0.5 * (view0 + view1), rel=1e-6)


def test_projection_matches_the_camera_module_and_never_raises():
    camera = FoVPerspectiveCamera.look_at([3.0, 4.0], [10.0, -5.0], [30.0, 200.0]).to_opencv((480, 640))
    points = torch.randn(20, 3, generator=torch.Generator().manual_seed(0)) * 0.5
    np.testing.assert_allclose(energies.project_points(camera, points), camera.project(points)[..., :2], atol=1e-4)
    behind = OpenCVCamera(torch.eye(3)[None], torch.eye(3)[None], torch.tensor([[0.0, 0.0, -5.0]]))
    assert torch.isfinite(energies.project_points(behind, points)).all()


def test_procrustes_removes_a_similarity():
    points = torch.randn(22, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rotation = axis_angle_to_matrix(torch.tensor([[0.3, -1.2, 0.7]], dtype=torch.float64))[0]
    moved = 1.7 * points @ rotation.T + torch.tensor([0.1, 2.0, -3.0], dtype=torch.float64)
    assert float(energies.pa_mpjpe(moved, points)) < 1e-8  # rodrigues carries a 1e-8 epsilon
    assert float(energies.mpjpe(moved, points)) > 0.5


def test_view_selection_and_shape_energies():
    assert float(energies.view_selection_energy(torch.tensor([0.5, 0.5, 0.5, 0.5]), 3.0)) == pytest.approx(1.0)
    assert float(energies.view_selection_energy(torch.tensor([1.0, 1.0, 1.0, 0.5]), 3.0)) == 0.0
    assert float(energies.shape_energy(torch.tensor([[1.0, 2.0]]), torch.tensor([0.5, 1.0]))) == pytest.approx(4.25)


def test_sites_forward_matches_the_full_body_forward(open_body, smplx_models_dir):
    generator = torch.Generator().manual_seed(0)
    for body in (open_body, load_body("smplx", smplx_models_dir)):
        pose = torch.randn(2, body.num_body_joints * 3, generator=generator) * 0.4
        betas = torch.randn(2, body.num_betas, generator=generator)
        orient, transl = torch.randn(2, 3, generator=generator), torch.randn(2, 3, generator=generator)
        ids = torch.tensor([0, 17, body.num_vertices - 1])
        with torch.no_grad():
            full = body(betas=betas, body_pose=pose, global_orient=orient, transl=transl)
            joints, vertices = sites_forward(body, betas, pose, orient, transl, ids)
        np.testing.assert_allclose(joints, full.joints, atol=1e-5)
        np.testing.assert_allclose(vertices, full.vertices[:, ids], atol=1e-5)


def test_coco_sites_on_the_open_body_sit_on_the_face(open_body):
    sites = keypoint_sites("coco17", open_body.topology, open_body.v_template.numpy())
    rest = open_body.v_template.numpy()
    nose, left_ear, right_ear = (rest[sites.vertex[COCO17_NAMES.index(name)]] for name in ("nose", "left_ear", "right_ear"))
    assert nose[2] > 0.08 and 0.38 < nose[1] < 0.48  # in front of the head
    assert left_ear[0] > 0.05 and right_ear[0] < -0.05  # the body's left is +X
    assert sites.weight[COCO17_NAMES.index("left_hip")] == pytest.approx(0.5)
    smplx_sites = keypoint_sites("coco17", "smplx-10475")
    assert smplx_sites.vertex[COCO17_NAMES.index("nose")] == 9120
