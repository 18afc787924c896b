"""The fit's energy terms as pure functions, against brute-force references and hand cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.hoi.fit import contact_distance, mask_centroid, rendered_centroid, soft_iou
from engine.hoi.inputs import Intrinsics, back_project, project
from engine.render.silhouette import depth_map, release_sigma_pixels, soft_silhouette, visible_soft_silhouette


def test_soft_iou_is_a_true_iou():
    mask = torch.zeros(8, 8, dtype=torch.float64)
    mask[2:6, 2:6] = 1
    assert soft_iou(mask, mask).item() == pytest.approx(1.0)  # the release's sum(a + m) "union" gives 0.5 here
    shifted = torch.roll(mask, 2, dims=1)
    assert soft_iou(shifted, mask).item() == pytest.approx(8 / 24)
    half = mask * 0.5
    assert soft_iou(half, mask).item() == pytest.approx(8 / (8 + 16 - 8))


def test_mask_centroid_is_row_col():
    weights = torch.zeros(5, 7, dtype=torch.float64)
    weights[1, 6] = 1
    weights[3, 2] = 1
    np.testing.assert_allclose(mask_centroid(weights).numpy(), [2.0, 4.0])


def test_rendered_centroid_falls_back_to_the_projection_when_nothing_is_visible():
    screen = torch.tensor([[10.0, 20.0, 1.0], [14.0, 30.0, 1.0]], dtype=torch.float64)
    centroid = rendered_centroid(torch.zeros(8, 8, dtype=torch.float64), screen)
    np.testing.assert_allclose(centroid.numpy(), [25.0, 12.0])  # (row, col) of the vertex mean


def test_contact_distance_matches_the_double_loop():
    rng = np.random.default_rng(0)
    human, obj = rng.normal(size=(30, 3)), rng.normal(size=(20, 3))
    p_human, p_obj = rng.uniform(size=30) * (rng.uniform(size=30) > 0.3), rng.uniform(size=20)
    numerator = sum(np.linalg.norm(human[i] - obj[j]) * p_human[i] * p_obj[j] for i in range(30) for j in range(20))
    expected = numerator / sum(p_human[i] * p_obj[j] for i in range(30) for j in range(20))
    value = contact_distance(*(torch.as_tensor(a) for a in (human, p_human, obj, p_obj)), chunk=7)
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_projection_and_back_projection_are_inverse():
    camera = Intrinsics(500.0, 480.0, 255.5, 191.5)
    point = back_project(100.0, 300.0, 2.5, camera)
    screen = project(torch.as_tensor(point)[None], camera)[0].numpy()
    np.testing.assert_allclose(screen, [300.0, 100.0, 2.5], atol=1e-9)
    scaled = camera.scaled(0.5)  # pixel centres stay at integers: pixel 1 of the half image covers pixels 2 and 3
    assert scaled.cx == pytest.approx((255.5 + 0.5) * 0.5 - 0.5)


def test_release_sigma_in_pixels():
    assert release_sigma_pixels((512, 512)) == pytest.approx(1e-4 * 256 ** 2)
    assert release_sigma_pixels((256, 512)) == pytest.approx(1e-4 * 128 ** 2)


def square(depth: float, half: float = 10.0, centre=(32.0, 32.0)):
    """Two triangles of a screen-space square (column, row, depth), counter-clockwise as seen."""
    c, r = centre
    screen = torch.tensor([[c - half, r - half, depth], [c - half, r + half, depth], [c + half, r + half, depth],
                           [c + half, r - half, depth]], dtype=torch.float64)
    return screen, torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_backface_culling_keeps_front_faces_only():
    screen, faces = square(2.0)
    front = soft_silhouette(screen[None], faces, (64, 64), 1.0, cull_backfaces=True)
    back = soft_silhouette(screen[None], faces.flip(1), (64, 64), 1.0, cull_backfaces=True)
    assert front[0, 28, 36] > 0.99 and back.max() == 0  # off the shared diagonal edge


def test_occluder_hides_the_object_behind_it_only():
    obj, faces = square(3.0)
    near, near_faces = square(1.0, half=5.0)
    far, far_faces = square(5.0, half=5.0)
    size = (64, 64)
    hidden = visible_soft_silhouette(obj[None], faces, size, 1.0, depth_map(near[None], near_faces, size))
    shown = visible_soft_silhouette(obj[None], faces, size, 1.0, depth_map(far[None], far_faces, size))
    assert hidden[0, 32, 32] == 0 and hidden[0, 27, 40] > 0.95  # inside the occluder / beside it
    assert shown[0, 30, 34] > 0.99


def test_soft_silhouette_half_level_is_the_hard_coverage_edge():
    """The coverage is a sigmoid of the signed distance to the outline, the sign from the rasterizer: many small
    faces near a pixel do not add up to a halo, and pixels with coverage >= 0.5 are exactly the covered ones."""
    from engine.render.rasterizer import rasterize_meshes

    rows = torch.linspace(8, 40, 17, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(rows, rows, indexing="ij"), -1).reshape(-1, 2)  # a 16 x 16-cell square
    screen = torch.cat([grid.flip(1) + 0.3, torch.full((len(grid), 1), 2.0, dtype=torch.float64)], 1)
    index = torch.arange(17 * 17).view(17, 17)
    a, b, c, d = index[:-1, :-1].reshape(-1), index[:-1, 1:].reshape(-1), index[1:, 1:].reshape(-1), index[1:, :-1].reshape(-1)
    faces = torch.cat([torch.stack([a, b, c], 1), torch.stack([a, c, d], 1)])
    soft = soft_silhouette(screen[None], faces, (48, 48), 1.0)[0]
    hard = rasterize_meshes(screen[None].float(), faces, (48, 48)).covered[0]
    assert torch.equal(soft >= 0.5, hard)
