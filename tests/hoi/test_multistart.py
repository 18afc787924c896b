"""The fit's multi-start: start poses turned about an axis through a pivot, each probed, the lowest energy
continued (engine/hoi/fit.py, ``FitConfig.start_angles``)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.hoi.fit import FitConfig, fit_object, start_poses
from engine.hoi.synthetic import make_scene, render_mask, rotation_error_degrees
from engine.objects import builtin_object


def test_start_poses_turn_about_the_axis_through_the_pivot():
    rng = np.random.default_rng(0)
    R = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    R = R * np.sign(np.linalg.det(R))  # a rotation
    t, pivot, axis = rng.normal(size=3), rng.normal(size=3), np.array([0.0, 0.0, 2.0])
    points = rng.normal(size=(7, 3))
    poses = start_poses(R, t, pivot, axis, (0.0, 90.0, 180.0))
    np.testing.assert_allclose(poses[0][0], R, atol=1e-12)
    np.testing.assert_allclose(poses[0][1], t, atol=1e-12)
    for (turned_R, turned_t), angle in zip(poses[1:], (90.0, 180.0)):
        assert rotation_error_degrees(turned_R, R) == pytest.approx(angle, abs=1e-5)  # arccos near 180
        before, after = points @ R + t, points @ turned_R + turned_t
        # about the z axis through the pivot: z kept, distance to the axis kept, the angle turned
        np.testing.assert_allclose(after[:, 2], before[:, 2], atol=1e-12)
        rel_b, rel_a = (before - pivot)[:, :2], (after - pivot)[:, :2]
        np.testing.assert_allclose(np.linalg.norm(rel_a, axis=1), np.linalg.norm(rel_b, axis=1), atol=1e-12)
        cross = rel_b[:, 0] * rel_a[:, 1] - rel_b[:, 1] * rel_a[:, 0]
        angles = np.degrees(np.arctan2(cross, (rel_b * rel_a).sum(1)))
        np.testing.assert_allclose(np.abs(angles), angle, atol=1e-9)


def test_start_angles_are_checked():
    with pytest.raises(InputError, match="start_angles"):
        FitConfig(start_angles=())
    with pytest.raises(InputError, match="start_angles"):
        FitConfig(start_angles=(0.0, float("nan")))
    with pytest.raises(InputError, match="probe_iterations"):
        FitConfig(probe_iterations=0)


@pytest.mark.slow
def test_a_flipped_start_is_recovered_by_the_multistart():
    """The chair turned 180 degrees about the vertical (its back to the wrong side, a silhouette-only local
    minimum): from a single start the baseline stays flipped; with the 180-degree start it is found."""
    scene = make_scene("sit-chair", azimuth=30.0, image_size=(64, 64))
    mask, obj = render_mask(scene), builtin_object("chair")
    flip = np.diag([-1.0, 1.0, -1.0])  # 180 degrees about the camera's vertical
    start = scene.R @ flip
    single = fit_object(scene.body, obj, mask, None, FitConfig(iterations=30, frames=2, start_angles=(0.0,)),
                        camera=scene.camera, init_R=start)
    multi = fit_object(scene.body, obj, mask, None, FitConfig(iterations=30, frames=2, probe_iterations=10,
                                                              start_angles=(0.0, 180.0)), camera=scene.camera, init_R=start)
    assert rotation_error_degrees(single.R, scene.R) > 120
    assert multi.start_index == 1 and multi.start_energies[1] < multi.start_energies[0]
    assert rotation_error_degrees(multi.R, scene.R) < 30
    assert len(multi.losses["total"]) == 30 and multi.frame_steps[-1] == 30
