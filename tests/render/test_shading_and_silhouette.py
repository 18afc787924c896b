"""Phong numbers by hand, point compositing, and the soft silhouette's gradient by finite differences."""

import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.mesh import vertex_normals
from engine.render.cameras import FoVPerspectiveCamera
from engine.render.rasterizer import PointFragments, rasterize_meshes
from engine.render.shading import composite_points, nocs_colours, normals_as_colour, overlay_values, phong_shade
from engine.render.silhouette import soft_silhouette

QUAD = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
QUAD_FACES = torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_phong_on_a_quad_facing_the_camera():
    camera = FoVPerspectiveCamera.look_at(2.0, 0.0, 0.0)  # at (0, 0, 2)
    fragments = rasterize_meshes(camera.transform_points_screen(QUAD, (33, 33)), QUAD_FACES, (33, 33))
    normals = vertex_normals(QUAD, QUAD_FACES)
    colour = torch.full((4, 3), 0.6)
    image = phong_shade(fragments, QUAD_FACES, QUAD, normals, colour, camera.camera_centres(), lights=((0.0, 0.0, 3.0),))
    # centre pixel sees (0, 0, 0): n.l = 1, reflection points at the camera -> specular 0.2
    np.testing.assert_allclose(image[0, 16, 16], [(0.5 + 0.3) * 0.6 + 0.2] * 3, atol=1e-5)
    behind = phong_shade(fragments, QUAD_FACES, QUAD, normals, colour, camera.camera_centres(), lights=((0.0, 0.0, -3.0),))
    np.testing.assert_allclose(behind[0, 16, 16], [0.5 * 0.6] * 3, atol=1e-5)  # ambient only
    assert (image[0, 0, 0] == 1).all(), "background is white"


def test_colour_helpers():
    np.testing.assert_allclose(normals_as_colour(torch.tensor([[0.0, -1.0, 1.0]])), [[0.5, 0.0, 1.0]])
    nocs = nocs_colours(torch.randn(100, 3))
    assert float(nocs.min()) == pytest.approx(0.1) and float(nocs.max()) == pytest.approx(0.9)
    blended = overlay_values(torch.zeros(2, 3), torch.tensor([0.0, 0.5]))
    np.testing.assert_allclose(blended, [[0, 0, 0], [0.5, 0, 0]])


def test_point_alpha_compositing():
    idx = torch.tensor([[[[0, 1, -1]]]])
    dists = torch.tensor([[[[0.5 * 0.01, 0.0, -1.0]]]])
    fragments = PointFragments(idx, torch.ones_like(dists), dists)
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    out = composite_points(fragments, colours, radius=0.1)
    # front alpha 0.5 (red), second alpha 1 (blue) behind it, nothing left for the white background
    np.testing.assert_allclose(out[0, 0, 0], [0.5, 0.0, 0.5], atol=1e-6)


def test_soft_silhouette_gradient_matches_finite_differences():
    vertices = torch.tensor([[0.0, 0.4, 0.1], [-0.4, -0.3, 0.0], [0.45, -0.25, -0.1], [0.05, 0.0, 0.4]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    camera = FoVPerspectiveCamera.look_at(2.0, 10.0, 20.0, dtype=torch.float64)
    weights = torch.rand(1, 24, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def loss(v):
        return (soft_silhouette(camera.transform_points_screen(v, (24, 24)), faces, (24, 24), sigma=2.0) * weights).sum()

    vertices.requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(vertices), vertices)
    numeric = torch.zeros_like(grad)
    eps = 1e-6
    for i in range(4):
        for j in range(3):
            step = torch.zeros_like(vertices)
            step[i, j] = eps
            numeric[i, j] = (loss(vertices.detach() + step) - loss(vertices.detach() - step)) / (2 * eps)
    assert torch.allclose(grad, numeric, rtol=1e-4, atol=1e-6), (grad, numeric)
    assert grad.abs().max() > 1.0


def test_soft_silhouette_tends_to_hard_coverage():
    camera = FoVPerspectiveCamera.look_at(2.0, 0.0, 0.0)
    screen = camera.transform_points_screen(QUAD * 0.5, (40, 40))
    soft = soft_silhouette(screen, QUAD_FACES, (40, 40), sigma=0.05)
    hard = rasterize_meshes(screen, QUAD_FACES, (40, 40)).covered
    assert ((soft > 0.5) == hard).float().mean() >= 0.99
    with pytest.raises(InputError, match="sigma"):
        soft_silhouette(screen, QUAD_FACES, (40, 40), sigma=-1)
