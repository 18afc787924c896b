"""The outline-band soft silhouette against the brute-force SoftRas reference (tests/silhouette_reference.py)
and hand cases: equal outside, the same 0.5 level, gradients of a fitting loss pointing the same way,
interior edges and folds not darkening the inside, any winding, culling and several views."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.hoi.fit import soft_iou
from engine.objects import _box, _combine
from engine.render.cameras import FoVPerspectiveCamera
from engine.render.rasterizer import rasterize_meshes
from engine.render.silhouette import MeshEdges, drawn_faces, outline_edges, soft_silhouette
from silhouette_reference import brute_force_soft_silhouette

SIZE = (40, 40)


def small_chair() -> tuple[torch.Tensor, torch.Tensor]:
    """A coarse closed chair (seat, two legs, a back; ~300 faces): folds, parts in front of other parts."""
    step = 0.12
    parts = [_box((-0.22, 0.0, -0.21), (-0.14, 0.44, -0.13), step), _box((0.14, 0.0, 0.13), (0.22, 0.44, 0.21), step),
             _box((-0.22, 0.43, -0.21), (0.22, 0.48, 0.21), step), _box((-0.22, 0.46, -0.21), (0.22, 0.9, -0.15), step)]
    vertices, faces = _combine(*parts)
    vertices = torch.as_tensor(vertices - vertices.mean(0))
    return vertices, torch.as_tensor(faces)


def chair_screen(azimuth: float = 35.0, shift=(0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    vertices, faces = small_chair()
    camera = FoVPerspectiveCamera.look_at(1.2, 20.0, azimuth, dtype=torch.float64)
    screen = camera.transform_points_screen(vertices, SIZE)[0]
    return screen + torch.tensor([shift[0], shift[1], 0.0], dtype=torch.float64), faces


def test_single_triangle_equals_the_brute_force_everywhere_with_gradients():
    screen = torch.tensor([[6.3, 5.1, 2.0], [33.0, 9.7, 2.5], [14.2, 31.4, 1.5]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    weights = torch.rand(SIZE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    outputs = []
    for render in (lambda s: soft_silhouette(s[None], faces, SIZE, 3.0, negligible=1e-12)[0],
                   lambda s: brute_force_soft_silhouette(s, faces, SIZE, 3.0)):
        leaf = screen.clone().requires_grad_(True)
        image = render(leaf)
        (image * weights).sum().backward()
        outputs.append((image.detach(), leaf.grad))
    assert outputs[0][0].max() > 0.99 and outputs[0][0].min() < 1e-6
    np.testing.assert_allclose(outputs[0][0].numpy(), outputs[1][0].numpy(), atol=1e-9)
    np.testing.assert_allclose(outputs[0][1].numpy(), outputs[1][1].numpy(), atol=1e-9)


def test_chair_outside_values_and_gradients_equal_the_brute_force():
    screen, faces = chair_screen()
    band = soft_silhouette(screen[None], faces, SIZE, 2.0, negligible=1e-12)[0]
    reference = brute_force_soft_silhouette(screen, faces, SIZE, 2.0)
    covered = rasterize_meshes(screen[None], faces, SIZE).covered[0]
    assert 150 < int(covered.sum()) < 1000
    assert torch.equal(band >= 0.5, reference >= 0.5) and torch.equal(band >= 0.5, covered)
    np.testing.assert_allclose(band[~covered].numpy(), reference[~covered].numpy(), atol=1e-9)
    # outside, the gradient of any weighting of the pixels is the brute force's
    weights = torch.rand(SIZE, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * ~covered
    grads = []
    for render in (lambda s: soft_silhouette(s[None], faces, SIZE, 2.0, negligible=1e-12)[0],
                   lambda s: brute_force_soft_silhouette(s, faces, SIZE, 2.0)):
        leaf = screen.clone().requires_grad_(True)
        (render(leaf) * weights).sum().backward()
        grads.append(leaf.grad)
    np.testing.assert_allclose(grads[0].numpy(), grads[1].numpy(), atol=1e-9)
    assert grads[0].abs().max() > 0.1


@pytest.mark.parametrize("shift", [(2.5, 0.0), (-1.5, 2.0), (0.0, -3.0)])
def test_chair_fitting_gradient_points_like_the_brute_force(shift):
    """1 - soft IoU against the chair's hard mask at the true pose, rendered shifted: the gradient on the
    screen vertices (the fit's only path) points the same way, and so does its net 2D pull."""
    true_screen, faces = chair_screen()
    target = rasterize_meshes(true_screen[None], faces, SIZE).covered[0].to(torch.float64)
    screen, _ = chair_screen(shift=shift)
    grads = []
    for render in (lambda s: soft_silhouette(s[None], faces, SIZE, 2.0)[0],
                   lambda s: brute_force_soft_silhouette(s, faces, SIZE, 2.0)):
        leaf = screen.clone().requires_grad_(True)
        (1 - soft_iou(render(leaf), target)).backward()
        grads.append(leaf.grad[:, :2])
    band, reference = (g.reshape(-1) for g in grads)
    # per vertex they differ by design: the brute force is saturated inside (its gradient comes from outside
    # pixels only), the band pulls from both sides of the outline (measured cosines 0.53-0.74)
    assert float(band @ reference / (band.norm() * reference.norm())) > 0.5
    pulls = [g.sum(0) for g in grads]  # the loss's derivative for a rigid screen shift
    assert float(pulls[0] @ pulls[1] / (pulls[0].norm() * pulls[1].norm())) > 0.95  # measured 0.97-0.99
    assert float(pulls[0] @ torch.tensor(shift, dtype=torch.float64)) > 0  # descent moves back towards the mask


def test_inside_depends_on_the_outline_only():
    """A small square in front of a large one: inside the large one, next to the small one's edges, the
    coverage is 1 (not SoftRas' darkening at interior edges); near the outer outline it is the hand value."""
    def square(half, centre, depth):
        c, r = centre
        return torch.tensor([[c - half, r - half, depth], [c - half, r + half, depth], [c + half, r + half, depth],
                             [c + half, r - half, depth]], dtype=torch.float64)
    screen = torch.cat([square(12.0, (20.0, 20.0), 3.0), square(4.0, (20.3, 20.3), 2.0)])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    coverage = soft_silhouette(screen[None], faces, SIZE, 2.0)[0]
    assert coverage[20, 25] == 1 and coverage[20, 24] == 1 and coverage[17, 20] == 1  # by the small square's edges
    distance = 20.0 - (20.0 - 12.0)  # pixel (row 20, col 9): 1 px inside the left edge at col 8
    assert float(coverage[20, 9]) == pytest.approx(1 / (1 + math.exp(-1.0 / 2.0)), abs=1e-12)
    assert float(coverage[20, 7]) == pytest.approx(1 / (1 + math.exp(1.0 / 2.0)), abs=1e-12)
    assert distance == 12.0 and coverage[20, 20] == 1 and coverage[0, 0] == 0


def test_outline_edges_of_a_tetrahedron_and_any_winding():
    vertices = torch.tensor([[0.0, 0.4, 0.1], [-0.4, -0.3, 0.0], [0.45, -0.25, -0.1], [0.05, 0.0, 0.4]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    screen = FoVPerspectiveCamera.look_at(2.0, 10.0, 20.0, dtype=torch.float64).transform_points_screen(vertices, SIZE)
    mesh = MeshEdges.from_faces(faces, 4)
    assert mesh.edges.shape == (6, 2)
    outline = outline_edges(screen[..., :2], mesh, drawn_faces(screen, faces, False))[0]
    hull = torch.tensor(__import__("scipy.spatial", fromlist=["ConvexHull"]).ConvexHull(screen[0, :, :2].numpy()).vertices)
    hull_edges = {tuple(sorted((int(a), int(b)))) for a, b in zip(hull, hull.roll(-1))}
    assert {tuple(edge) for edge in mesh.edges[outline].tolist()} == hull_edges
    flipped = faces[torch.tensor([0, 1, 2, 3])][:, [0, 2, 1]]
    flipped[1] = faces[1]  # mixed windings
    np.testing.assert_array_equal(soft_silhouette(screen, faces, SIZE, 2.0).numpy(),
                                  soft_silhouette(screen, flipped, SIZE, 2.0).numpy())


def test_culling_a_closed_mesh_keeps_its_silhouette_and_views_are_independent():
    vertices, faces = small_chair()
    cameras = FoVPerspectiveCamera.look_at(1.2, [20.0, -10.0], [35.0, 200.0], dtype=torch.float64)
    screens = cameras.transform_points_screen(vertices, SIZE)
    mesh = MeshEdges.from_faces(faces, len(vertices))
    both = soft_silhouette(screens, mesh, SIZE, 2.0)
    culled = soft_silhouette(screens, mesh, SIZE, 2.0, cull_backfaces=True)
    np.testing.assert_allclose(both.numpy(), culled.numpy(), atol=1e-12)
    for view in range(2):
        np.testing.assert_allclose(soft_silhouette(screens[view:view + 1], faces, SIZE, 2.0)[0].numpy(), both[view].numpy(), atol=1e-12)
    assert not torch.equal(both[0], both[1])
