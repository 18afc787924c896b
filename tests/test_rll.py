"""Render-Localize-Lift: round trips, a brute-force lift reference, object variants, cache and bad input."""
import numpy as np
import pytest
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
