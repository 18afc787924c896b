"""Render-Localize-Lift: round trips, a brute-force lift reference, object variants, cache and bad input."""
import numpy as np
import pytest
import torch
import trimesh

from engine import rll
from engine.errors import InputError


def test_open_body_visibility_and_round_trip(open_body, open_body_views):
    views, body = open_body_views, open_body
    assert views.vertex_ids.shape == (4, 1024, 1024, 3) and views.bary.shape == (4, 1024, 1024, 3)
    visible = views.visible_vertices()
    assert visible.mean() >= 0.95
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = np.isin(body.part_labels, rng.choice(len(body.part_names), size=rng.integers(2, 10), replace=False))
        recovered = rll.lift(views, rll.project(views, labels, min_vertices=2)) >= 0.5
        iou = (recovered & labels & visible).sum() / ((recovered | labels) & visible).sum()
        assert iou >= 0.98
        # InteractVLM's original 3-vertex rule erodes the contact border by one ring and never adds to it
        eroded = rll.lift(views, rll.project(views, labels, min_vertices=3)) >= 0.5
        assert not (eroded & ~labels).any()
        assert (eroded & labels & visible).sum() / (labels & visible).sum() >= 0.9


def brute_force_lift(views, probs):
    """Literal per-pixel loop of REFERENCE.md's lift."""
    num_views = views.valid.shape[0]
    numerator = np.zeros((num_views, views.num_vertices))
    denominator = np.zeros((num_views, views.num_vertices))
    for view, row, col in zip(*np.nonzero(views.valid)):
        for vertex, weight in zip(views.vertex_ids[view, row, col], views.bary[view, row, col]):
            numerator[view, vertex] += weight * probs[view, row, col]
            denominator[view, vertex] += weight
    visible = denominator > 0
    per_view = np.where(visible, numerator / np.where(visible, denominator, 1), 0)
    return np.clip(per_view.sum(0) / np.maximum(visible.sum(0), 1), 0, 1)


def test_lift_matches_the_literal_definition():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    views = rll.render_views(sphere.vertices, sphere.faces, preset="body", resolution=48, topology="test-sphere", cache=False)
    probs = np.random.default_rng(0).random(views.valid.shape)
    np.testing.assert_allclose(rll.lift(views, probs), brute_force_lift(views, probs), atol=1e-6)
    logits = np.random.default_rng(1).normal(0, 30, views.valid.shape)
    expected = brute_force_lift(views, 1 / (1 + np.exp(-np.clip(logits, -20, 20))))
    np.testing.assert_allclose(rll.lift_logits(views, logits), expected, atol=1e-6)


def test_object_mesh_vote_threshold():
    box = trimesh.creation.box(extents=(0.4, 0.2, 0.3)).subdivide().subdivide()
    views = rll.render_views(box.vertices, box.faces, preset="object_mesh", resolution=64, topology="test-box", cache=False)
    seen = views.visible_vertices()
    assert seen.mean() > 0.9
    weak = np.full(views.valid.shape, 0.25)
    assert (rll.lift_object_mesh(views, weak) == 0).all()
    strong = np.full(views.valid.shape, 0.6)
    np.testing.assert_allclose(rll.lift_object_mesh(views, strong)[seen], 0.6, atol=1e-6)


def _hand_views() -> rll.RenderedViews:
    """2 views of 1 x 3 pixels over 4 vertices, every id and weight written out."""
    ids = np.array([[[[0, 1, 2], [0, 1, 3], [1, 2, 3]]], [[[0, 2, 3], [0, 1, 2], [-1, -1, -1]]]])
    bary = np.array([[[[0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]]],
                     [[[0.6, 0.2, 0.2], [0.1, 0.1, 0.8], [0.0, 0.0, 0.0]]]], dtype=np.float32)
    valid = ids[..., 0] >= 0
    return rll.RenderedViews("object_mesh", "hand", 4, np.zeros((2, 1, 3, 3), np.uint8), ids, bary, valid)


def test_object_mesh_lift_hand_case():
    # View 0 votes with pixels 0 (p .8) and 2 (p .5); pixel 1 (p .2) is below 0.3.
    #   v0: .8;  v1 = v2: (.25 * .8 + 1/3 * .5) / (.25 + 1/3) = 0.6285714;  v3: .5
    # View 1 votes with pixel 0 (p .4) only; pixel 1 sits exactly on 0.3, which does not vote (p > 0.3).
    #   v0 = v2 = v3: .4; v1 gets no vote there, so that view does not count for it.
    probs = np.array([[[0.8, 0.2, 0.5]], [[0.4, 0.3, 0.9]]])
    expected = [(0.8 + 0.4) / 2, 0.6285714, (0.6285714 + 0.4) / 2, (0.5 + 0.4) / 2]
    np.testing.assert_allclose(rll.lift_object_mesh(_hand_views(), probs), expected, atol=1e-6)
    # A pixel just above the threshold votes, one just below does not.
    np.testing.assert_allclose(rll.lift_object_mesh(_hand_views(), np.full((2, 1, 3), 0.31)), 0.31, atol=1e-6)
    assert (rll.lift_object_mesh(_hand_views(), np.full((2, 1, 3), 0.29)) == 0).all()


def test_object_renders_are_centred_on_the_vertex_mean_at_distance_one_and_a_half():
    # Asymmetric: 9 vertices near x = 0 and one far at x = 1, so the vertex mean (0.1, 0, 0) is far from
    # the bounding-box centre (0.5, 0, 0). After normalisation the mean sits at the origin and the extent is 1.
    vertices = np.array([[0, 0, 0]] * 9 + [[1.0, 0, 0]]) + np.random.default_rng(0).normal(0, 1e-3, (10, 3))
    normalised = rll.normalise_object(torch.as_tensor(vertices))
    np.testing.assert_allclose(normalised.mean(0), 0, atol=1e-12)
    assert float((normalised.amax(0) - normalised.amin(0)).max()) == pytest.approx(1.0)
    cameras = rll.PRESETS["object_mesh"].cameras()
    np.testing.assert_allclose(cameras.camera_centres().norm(dim=-1), 1.5, atol=1e-6)
    np.testing.assert_allclose(rll.PRESETS["object_mesh"].camera_conditioning()[:, 0], 0.2)  # Φ keeps dist 2
    # The vertex mean projects to the image centre in every view, at depth 1.5.
    screen = cameras.transform_points_screen(normalised.mean(0, keepdim=True).float(), (64, 64))
    np.testing.assert_allclose(screen[:, 0], [[31.5, 31.5, 1.5]] * 4, atol=1e-4)


def test_object_mesh_renders_use_bbox_colours_and_one_light_per_view():
    # An asymmetric slab: colours are each axis of the bounding box mapped to [0.1, 0.9], never normals.
    slab = trimesh.creation.box(extents=(0.6, 0.2, 0.1))
    slab.vertices[:, 0] += np.where(slab.vertices[:, 0] > 0, 0.3, 0.0)
    views = rll.render_views(slab.vertices, slab.faces, preset="object_mesh", resolution=48, topology="slab", cache=False)
    assert [view.light for view in rll.PRESETS["object_mesh"].views] == [(0, 0, 3), (0, 0, 3), (0, 0, -3), (0, 0, -3)]
    from engine.render.shading import nocs_colours
    colours = nocs_colours(rll.normalise_object(torch.as_tensor(slab.vertices, dtype=torch.float32)))
    np.testing.assert_allclose(colours.amin(0), 0.1, atol=1e-6)
    np.testing.assert_allclose(colours.amax(0), 0.9, atol=1e-6)
    recoloured = rll.render_views(slab.vertices, slab.faces, preset="object_mesh", resolution=48, topology="slab",
                                  cache=False, vertex_colours=colours.numpy())
    np.testing.assert_array_equal(views.images, recoloured.images)
    normals = rll.render_views(slab.vertices, slab.faces, preset="object_mesh", resolution=48, topology="slab",
                               cache=False, vertex_colours=np.full((8, 3), 0.5))
    assert not np.array_equal(views.images, normals.images)


def test_point_cloud_views_round_trip():
    points = trimesh.creation.icosphere(subdivisions=3).vertices * np.array([0.5, 0.3, 0.4])
    views = rll.render_views(points, None, preset="object_points", resolution=128, topology="test-points", cache=False)
    assert views.vertex_ids.shape == (4, 128, 128, 1)
    assert views.images[views.valid].mean() < 250 and (views.images[~views.valid] == 255).all()
    seen = views.visible_vertices()
    labels = points[:, 0] > 0.1
    recovered = rll.lift_points(views, rll.project(views, labels)) >= 0.5
    assert (recovered & labels & seen).sum() / ((recovered | labels) & seen).sum() >= 0.95


def test_render_cache_round_trips_from_disk(open_body):
    vertices = open_body.vitruvian_vertices()
    first = rll.render_views(vertices, open_body.faces, preset="body", resolution=64, topology=open_body.topology)
    second = rll.render_views(vertices, open_body.faces, preset="body", resolution=64, topology=open_body.topology)
    for field in ("images", "vertex_ids", "bary", "valid"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    cached = list(rll.cache_dir("rll").glob(f"{open_body.topology}-body-64-*.npz"))
    assert len(cached) == 1
    moved = rll.render_views(vertices + 0.01, open_body.faces, preset="body", resolution=64, topology=open_body.topology)
    assert not np.array_equal(moved.vertex_ids, first.vertex_ids), "other geometry, other cache entry"


@pytest.mark.parametrize("masks,message", [
    (np.zeros((4, 1024, 512)), "shape"),
    (np.full((4, 1024, 1024), np.nan), "NaN"),
    (np.full((4, 1024, 1024), 1.5), "probabilities"),
])
def test_bad_masks_are_refused(open_body_views, masks, message):
    with pytest.raises(InputError, match=message):
        rll.lift(open_body_views, masks)


def test_bad_labels_and_meshes_are_refused(open_body_views):
    with pytest.raises(InputError, match="vertex_labels"):
        rll.project(open_body_views, np.zeros(10))
    with pytest.raises(InputError, match="min_vertices"):
        rll.project(open_body_views, np.zeros(open_body_views.num_vertices), min_vertices=4)
    tri = np.array([[0, 1, 2]])
    with pytest.raises(InputError, match="NaN"):
        rll.render_views(np.array([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]]), tri, topology="t", cache=False)
    with pytest.raises(InputError, match="vertex ids"):
        rll.render_views(np.eye(3), np.array([[0, 1, 7]]), topology="t", cache=False)
    with pytest.raises(InputError, match="empty"):
        rll.render_views(np.zeros((0, 3)), np.zeros((0, 3), dtype=int), topology="t", cache=False)
    with pytest.raises(InputError, match="degenerate"):
        rll.render_views(np.zeros((3, 3)), tri, preset="object_mesh", topology="t", cache=False)
    with pytest.raises(InputError, match="may only hold letters"):
        rll.render_views(np.eye(3), tri, topology="../../escape")
    with pytest.raises(InputError, match="unknown view preset"):
        rll.render_views(np.eye(3), tri, preset="nope", topology="t", cache=False)
