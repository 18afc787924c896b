"""The rasterizers against brute-force per-pixel references on small meshes and point clouds."""
import numpy as np
import pytest
import torch
import trimesh

from engine.errors import InputError
from engine.render import rasterizer
from engine.render.cameras import FoVPerspectiveCamera
from engine.render.rasterizer import rasterize_meshes, rasterize_points


def brute_force_mesh(screen, faces, height, width):
    """Every pixel against every face: solve for barycentrics, keep the nearest perspective depth."""
    screen, faces = screen.double().numpy(), faces.numpy()
    pix_to_face = np.full((len(screen), height, width), -1)
    bary = np.zeros((len(screen), height, width, 3))
    for n in range(len(screen)):
        depth = np.full((height, width), np.inf)
        rows, cols = np.mgrid[0:height, 0:width]
        for f, (a, b, c) in enumerate(faces):
            p = screen[n, [a, b, c]]
            if (p[:, 2] <= 0).any():
                continue
            matrix = np.array([[p[0, 0] - p[2, 0], p[1, 0] - p[2, 0]], [p[0, 1] - p[2, 1], p[1, 1] - p[2, 1]]])
            if abs(np.linalg.det(matrix)) < 1e-12:
                continue
            rhs = np.stack([cols - p[2, 0], rows - p[2, 1]], -1)[..., None]
            l01 = (np.linalg.inv(matrix) @ rhs)[..., 0]
            lam = np.concatenate([l01, 1 - l01.sum(-1, keepdims=True)], -1)
            inside = (lam >= -1e-9).all(-1)
            z = 1 / (lam / p[:, 2]).sum(-1)
            closer = inside & (z < depth)
            depth[closer] = z[closer]
            pix_to_face[n][closer] = f
            corrected = lam / p[:, 2]
            bary[n][closer] = (corrected / corrected.sum(-1, keepdims=True))[closer]
    return pix_to_face, bary


def scene(seed):
    generator = np.random.default_rng(seed)
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    triangles = generator.uniform(-0.8, 0.8, (30, 3, 3))
    vertices = np.concatenate([sphere.vertices, triangles.reshape(-1, 3)])
    faces = np.concatenate([sphere.faces, len(sphere.vertices) + np.arange(90).reshape(30, 3)])
    return torch.tensor(vertices, dtype=torch.float32), torch.tensor(faces)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mesh_rasterizer_matches_brute_force(seed):
    vertices, faces = scene(seed)
    camera = FoVPerspectiveCamera.look_at([2.5, 2.5], [20, -30], [seed * 40, 200])
    screen = camera.transform_points_screen(vertices, (48, 64))
    fragments = rasterize_meshes(screen, faces, (48, 64))
    expected_faces, expected_bary = brute_force_mesh(screen, faces, 48, 64)
    agree = fragments.pix_to_face.numpy() == expected_faces
    assert agree.mean() >= 0.999
    both = agree & (expected_faces >= 0)
    assert both.sum() > 500
    np.testing.assert_allclose(fragments.bary.numpy()[both], expected_bary[both], atol=1e-4)


def test_chunking_does_not_change_the_result(monkeypatch):
    vertices, faces = scene(3)
    screen = FoVPerspectiveCamera.look_at(2.5, 10, 30).transform_points_screen(vertices, (64, 64))
    whole = rasterize_meshes(screen, faces, (64, 64))
    monkeypatch.setattr(rasterizer, "CANDIDATE_BUDGET", 97)
    chunked = rasterize_meshes(screen, faces, (64, 64))
    assert torch.equal(whole.pix_to_face, chunked.pix_to_face) and torch.equal(whole.bary, chunked.bary)


def test_barycentrics_are_perspective_correct():
    """Interpolating view-space corners with the barycentrics lands on the pixel's own ray."""
    vertices, faces = scene(4)
    camera = FoVPerspectiveCamera.look_at(2.0, 15, 20)
    view = camera.world_to_view(vertices)
    fragments = rasterize_meshes(camera.view_to_screen(view, (64, 64)), faces, (64, 64))
    covered = fragments.covered[0]
    corners = view[0][faces[fragments.pix_to_face[0][covered]]]
    points = (fragments.bary[0][covered][..., None] * corners).sum(-2)
    back = camera.view_to_screen(points[None], (64, 64))[0]
    rows, cols = torch.nonzero(covered, as_tuple=True)
    torch.testing.assert_close(back[:, 0], cols.float(), atol=2e-3, rtol=0)
    torch.testing.assert_close(back[:, 1], rows.float(), atol=2e-3, rtol=0)
    torch.testing.assert_close(back[:, 2], fragments.zbuf[0][covered], atol=1e-4, rtol=0)


def test_point_rasterizer_matches_brute_force():
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(200, 3, generator=generator) - 0.5
    camera = FoVPerspectiveCamera.look_at(2.0, 30, 45)
    screen = camera.transform_points_screen(points, (40, 40))
    radius, k = 0.08, 4
    fragments = rasterize_points(screen, (40, 40), radius, k)
    rows, cols = np.mgrid[0:40, 0:40]
    s = screen[0].double().numpy()
    d2 = ((cols[..., None] - s[:, 0]) ** 2 + (rows[..., None] - s[:, 1]) ** 2) / 20 ** 2
    for i in range(40):
        for j in range(40):
            inside = np.nonzero(d2[i, j] < radius ** 2)[0]
            expected = inside[np.argsort(s[inside, 2], kind="stable")][:k]
            got = fragments.idx[0, i, j].numpy()
            assert list(got[: len(expected)]) == list(expected) and (got[len(expected):] == -1).all()


@pytest.mark.parametrize("screen,faces,message", [
    (torch.full((1, 3, 3), float("nan")), torch.tensor([[0, 1, 2]]), "NaN"),
    (torch.ones(1, 3, 3), torch.tensor([[0, 1, 5]]), "vertex ids"),
    (torch.ones(1, 3, 3), torch.zeros(0, 3, dtype=torch.long), "empty"),
    (torch.ones(3, 3), torch.tensor([[0, 1, 2]]), "shape"),
])
def test_bad_mesh_input_is_refused(screen, faces, message):
    with pytest.raises(InputError, match=message):
        rasterize_meshes(screen, faces, (8, 8))


def test_bad_point_input_is_refused():
    with pytest.raises(InputError, match="radius"):
        rasterize_points(torch.ones(1, 4, 3), (8, 8), radius=0.0)
    with pytest.raises(InputError, match="image size"):
        rasterize_points(torch.ones(1, 4, 3), (0, 8), radius=0.1)
