"""GenZI's energies on hand cases, and the self-penetration capsules' method and accuracy on the open body."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.fitting import energies as core
from engine.fitting.synthetic import body_pose_from
from engine.genzi import energies
from engine.genzi.energies import (fit_part_capsules, genzi_reprojection, genzi_view_selection, scene_contact,
                                   scene_penetration, self_penetration, tree_distance)


def test_scene_penetration_is_the_mean_depth_below_the_threshold():
    sdf = torch.tensor([0.2, -0.03, 0.0, -0.01, -0.11])
    # thr -0.01: only -0.03 and -0.11 are below it (-0.01 is not): mean(|-0.03 + 0.01|, |-0.11 + 0.01|) = 0.06
    assert float(scene_penetration(sdf, -0.01)) == pytest.approx(0.06)
    # thr 0: -0.03, -0.01, -0.11 -> mean 0.05
    assert float(scene_penetration(sdf, 0.0)) == pytest.approx(0.05)
    assert float(scene_penetration(torch.tensor([0.1, 0.0]), 0.0)) == 0.0


def test_contact_pulls_the_closest_vertex_only_when_nothing_penetrates():
    floating = torch.tensor([0.30, 0.05, 0.12], requires_grad=True)
    value = scene_contact(floating, -0.01)
    assert float(value) == pytest.approx(0.06)
    value.backward()
    assert floating.grad.tolist() == [0.0, 1.0, 0.0]
    assert float(scene_contact(torch.tensor([0.3, -0.02]), -0.01)) == 0.0  # penetrating: no contact term
    assert float(scene_contact(torch.tensor([0.3, -0.01]), -0.01)) == 0.0  # touching at thr: min - thr = 0


def test_reprojection_uses_rho_0_2_on_pixels_over_512_and_view_scores():
    keypoints = torch.zeros(2, 1, 2)
    projected = torch.tensor([[[51.2, 0.0]], [[0.0, 512.0]]])  # residuals 0.1 and 1.0 in GenZI's units
    confidence = torch.tensor([[1.0], [0.5]])
    scores = torch.tensor([0.75, 0.25])
    gm = lambda r: 0.04 * r ** 2 / (r ** 2 + 0.04)
    expected = 0.75 * 1.0 * gm(0.1) + 0.25 * 0.5 * gm(1.0)
    assert float(genzi_reprojection(projected, keypoints, confidence, scores)) == pytest.approx(expected)
    # Scores are normalised: doubling them all changes nothing.
    assert float(genzi_reprojection(projected, keypoints, confidence, 2 * scores)) == pytest.approx(expected)


def test_view_selection_is_relu_of_three_minus_the_score_sum():
    assert float(genzi_view_selection(torch.tensor([0.5] * 4))) == pytest.approx(1.0)
    assert float(genzi_view_selection(torch.tensor([0.9] * 4))) == 0.0


def test_tree_distance_on_the_body_skeleton():
    distance = tree_distance()
    names = ("pelvis", "left_hip", "right_hip", "left_wrist", "spine3", "left_knee", "right_knee")
    from engine.body.skeleton import BODY_JOINT_NAMES as J
    index = {name: J.index(name) for name in names}
    assert distance[index["pelvis"], index["left_hip"]] == 1
    assert distance[index["left_hip"], index["right_hip"]] == 2
    assert distance[index["left_knee"], index["right_knee"]] == 4
    assert distance[index["left_wrist"], index["spine3"]] == 4  # wrist-elbow-shoulder-collar-spine3


@pytest.fixture(scope="module")
def capsules(open_body):
    return fit_part_capsules(open_body.v_template.numpy(), energies.body_part_labels(open_body))


def test_capsule_accuracy_on_the_rest_surface(open_body, capsules):
    """The stated accuracy: each part's capsule, evaluated at that part's own rest vertices (which are on
    the true surface, signed distance 0), is off by a median below 1 cm and a 90th percentile below 3.5 cm."""
    vertices = open_body.v_template
    distance = capsules.signed_distance(vertices, vertices)[torch.arange(len(vertices)), capsules.labels].abs()
    assert float(distance.median()) < 0.01
    assert float(distance.quantile(0.9)) < 0.035
    assert len(capsules.parts) == 22 and capsules.non_adjacent.shape == (22, 22)


def test_capsule_signed_distance_by_hand(capsules):
    a, b = capsules.axes(torch.zeros(capsules.low_weights.shape[1], 3) + torch.tensor([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(a.numpy(), np.tile([1.0, 2.0, 3.0], (22, 1)), atol=1e-5)  # rows sum to 1
    # A hand-made capsule: axis from (0,0,0) to (0,1,0), radius 0.1 (every vertex at one of the ends).
    vertices = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    one = energies.PartCapsules(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0.1]),
                                torch.tensor([0, 0]), torch.tensor([[False]]), (0,))
    points = torch.tensor([[0.0, 0.5, 0.0], [0.3, 0.5, 0.0], [0.0, 1.5, 0.0], [0.05, 0.2, 0.0]])
    np.testing.assert_allclose(one.signed_distance(points, vertices)[:, 0].numpy(), [-0.1, 0.2, 0.4, -0.05], atol=1e-6)


def test_self_penetration_is_zero_at_rest_and_positive_with_the_hand_in_the_chest(open_body, capsules):
    with torch.no_grad():
        rest = open_body(body_pose=torch.zeros(1, 63)).vertices[0]
        crossed = open_body(body_pose=body_pose_from({"left_shoulder": (0.0, -1.2, -1.2),
                                                      "left_elbow": (0.0, -2.4, 0.0)})).vertices[0]
    assert float(self_penetration(rest, capsules)) == 0.0
    assert float(self_penetration(open_body.vitruvian_vertices(), capsules)) == 0.0
    value = float(self_penetration(crossed, capsules))
    depth = torch.relu(-capsules.signed_distance(crossed, crossed)) * capsules.non_adjacent[capsules.labels]
    assert value > 1e-5 and float(depth.max()) > 0.05  # the forearm is 7 cm deep in the torso's capsule
    # The gradient pushes the penetrating hand vertices out of the torso.
    moving = crossed.clone().requires_grad_(True)
    self_penetration(moving, capsules).backward()
    assert moving.grad.abs().sum() > 0
    stepped = (moving - 50.0 * moving.grad).detach()
    assert float(self_penetration(stepped, capsules)) < value


def test_part_labels_fold_hand_joints_into_the_body(smplx_models_dir):
    from engine.body import load_body

    smplx = load_body("smplx", smplx_models_dir)
    labels = energies.body_part_labels(smplx)
    assert labels.shape == (smplx.num_vertices,) and labels.min() >= 0 and labels.max() <= 21
    capsules = fit_part_capsules(smplx.v_template.numpy(), labels)
    assert capsules.non_adjacent.shape == (len(capsules.parts), len(capsules.parts))
