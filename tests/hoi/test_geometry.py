"""Rigid geometry of the fit: the release's 6D layout, Umeyama and contact ICP against closed-form cases (1e-6)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from engine.errors import InputError
from engine.hoi.geometry import contact_icp, matrix_to_rotation_6d, rotation_6d_to_matrix, umeyama


def random_pose(seed: int):
    rng = np.random.default_rng(seed)
    return (torch.as_tensor(Rotation.random(random_state=seed).as_matrix()),
            torch.as_tensor(rng.normal(size=3)))


def test_6d_is_interleaved_columns_with_gram_schmidt():
    # six = (a1x, a2x, a1y, a2y, a1z, a2z): viewed as (3, 2), columns a1 and a2.
    six = torch.tensor([2.0, 1.0, 0.0, 3.0, 0.0, 0.0], dtype=torch.float64)
    R = rotation_6d_to_matrix(six)
    np.testing.assert_allclose(R.numpy(), np.eye(3), atol=1e-12)  # a1 along x, a2 (after removing x) along y
    six = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 1.0], dtype=torch.float64)  # a1 = y, a2 = z
    np.testing.assert_allclose(rotation_6d_to_matrix(six).numpy(), [[0, 0, 1], [1, 0, 0], [0, 1, 0]], atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_6d_round_trip(seed):
    R, _ = random_pose(seed)
    np.testing.assert_allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(R)).numpy(), R.numpy(), atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_umeyama_recovers_a_known_rigid_map(seed):
    R, t = random_pose(seed)
    source = torch.as_tensor(np.random.default_rng(100 + seed).normal(size=(20, 3)))
    alignment = umeyama(source, source @ R + t)
    np.testing.assert_allclose(alignment.R.numpy(), R.numpy(), atol=1e-6)
    np.testing.assert_allclose(alignment.t.numpy(), t.numpy(), atol=1e-6)
    assert alignment.rmse < 1e-6 and abs(torch.linalg.det(alignment.R).item() - 1) < 1e-9


def test_umeyama_hand_case_and_no_reflection():
    # A quarter turn about z maps x -> y for row vectors: [1, 0, 0] @ R = [0, 1, 0].
    source = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=torch.float64)
    R = torch.tensor([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    alignment = umeyama(source, source @ R + torch.tensor([0.5, 0, -1.0], dtype=torch.float64))
    np.testing.assert_allclose(alignment.R.numpy(), R.numpy(), atol=1e-12)
    np.testing.assert_allclose(alignment.t.numpy(), [0.5, 0, -1.0], atol=1e-12)
    # A mirrored target cannot be matched by a rotation: the result stays a proper rotation (det +1).
    mirrored = umeyama(source, source * torch.tensor([-1.0, 1, 1], dtype=torch.float64))
    assert torch.linalg.det(mirrored.R).item() == pytest.approx(1.0)


def test_umeyama_refuses_too_few_points():
    with pytest.raises(InputError, match="at least 3"):
        umeyama(torch.zeros(2, 3), torch.zeros(2, 3))


def contact_pair(seed: int):
    """Object contact points and normals, and the human contacts they touch under a known pose."""
    rng = np.random.default_rng(seed)
    points = torch.as_tensor(rng.uniform(-0.3, 0.3, size=(8, 3)))
    normals = torch.nn.functional.normalize(torch.as_tensor(rng.normal(size=(8, 3))), dim=1)
    R, t = random_pose(seed)
    return points, normals, points @ R + t, -(normals @ R), R, t  # the body's normals face the object's


@pytest.mark.parametrize("seed", range(4))
def test_icp_snaps_contacts_to_the_closed_form_pose(seed):
    points, normals, human, human_normals, R, t = contact_pair(seed)
    start = torch.as_tensor(Rotation.from_rotvec([0.05, -0.03, 0.02]).as_matrix()) @ R
    result = contact_icp(points, normals, human, human_normals, start, t + 0.01)
    np.testing.assert_allclose(result.R.numpy(), R.numpy(), atol=1e-6)
    np.testing.assert_allclose(result.t.numpy(), t.numpy(), atol=1e-6)
    assert result.converged and result.iterations <= 10 and result.rmse[-1] < 1e-6


def test_icp_uses_negated_human_normals_to_pick_facing_partners():
    """Two candidate partners at the same distance: the one whose normal faces the object point wins."""
    point = torch.zeros(3, 3, dtype=torch.float64) + torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float64)
    normal = torch.tensor([[0.0, 0, 1]] * 3, dtype=torch.float64)
    offsets = torch.tensor([[0.0, 0, 0.01], [0.0, 0, -0.01]], dtype=torch.float64)
    human = torch.cat([point + offsets[0], point + offsets[1]])
    human_normals = torch.cat([-normal, normal])  # the first copy faces the object, the second faces away
    result = contact_icp(point, normal, human, human_normals, torch.eye(3, dtype=torch.float64),
                         torch.zeros(3, dtype=torch.float64), max_iterations=1)
    np.testing.assert_allclose(result.t.numpy(), [0, 0, 0.01], atol=1e-9)


def test_icp_stops_at_max_iterations():
    points, normals, human, human_normals, R, t = contact_pair(0)
    result = contact_icp(points, normals, human, human_normals, torch.eye(3, dtype=torch.float64),
                         torch.zeros(3, dtype=torch.float64), max_iterations=2)
    assert result.iterations == 2 and len(result.rmse) == 2


def test_icp_from_an_offset_start_does_not_collapse_onto_the_patch_boundary():
    """A dense flat human patch (a 21 x 21 grid, normals +z) touched by a smaller object patch (7 x 7, normals
    -z) in its middle. Started 0.25 m to the side and tilted 25 degrees, nearest neighbours all fall on the
    near boundary of the human patch and a plain ICP tilts the object further; the patch centroids aligned
    first and the rejected, one-to-one matches bring it back flat onto the patch."""
    axis = torch.linspace(-0.2, 0.2, 21, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    human = torch.cat([grid, torch.zeros(len(grid), 1, dtype=torch.float64)], 1)
    human_normals = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64).expand_as(human)
    small = grid[(grid.abs() <= 0.061).all(1)]
    points = torch.cat([small, torch.zeros(len(small), 1, dtype=torch.float64)], 1)
    normals = -human_normals[: len(points)]
    tilt = torch.as_tensor(Rotation.from_rotvec([np.radians(25), 0, 0]).as_matrix())
    result = contact_icp(points, normals, human, human_normals, tilt, torch.tensor([0.25, 0.1, 0.05], dtype=torch.float64))
    posed = points @ result.R + result.t
    np.testing.assert_allclose(posed[:, 2].numpy(), 0.0, atol=1e-6)  # flat on the patch, in contact
    assert (posed[:, :2].abs() <= 0.2 + 1e-6).all()  # on the human patch
    assert torch.allclose(result.R[:, 2].abs(), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-6)
