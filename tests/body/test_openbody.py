"""The procedural open body: a watertight, smooth, skinned human that the SMPL-X view presets frame."""
import math

import numpy as np
import pytest
import torch
import trimesh

from engine.body import openbody
from engine.body.model import OpenBody
from engine.body.topology import TOPOLOGY_VERTEX_COUNTS
from engine.errors import InputError


def _mesh(vertices, body):
    return trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), body.faces.numpy(), process=False)


def test_generation_is_deterministic_and_matches_the_registry():
    first = openbody.generate_open_body()
    second = openbody.generate_open_body()
    for field in ("vertices", "faces", "weights", "part_labels"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    assert len(first.vertices) == TOPOLOGY_VERTEX_COUNTS["openbody-v1"]
    assert 6000 <= len(first.vertices) <= 12000


def test_mesh_is_watertight_manifold_genus_zero(open_body):
    mesh = _mesh(open_body.v_template, open_body)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.euler_number == 2
    edges = np.sort(mesh.edges, axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all(), "every edge must be shared by exactly two faces"
    assert mesh.volume > 0, "faces are oriented outwards"
    assert trimesh.triangles.area(mesh.triangles).min() > 1e-7


def test_human_proportions_in_the_smplx_frame(open_body):
    vertices = open_body.v_template.numpy()
    height = vertices[:, 1].max() - vertices[:, 1].min()
    assert 1.65 <= height <= 1.75
    assert abs(vertices[:, 1].min() - openbody.FLOOR_Y) < 0.01
    pelvis = open_body.joints[0].numpy()
    assert np.linalg.norm(pelvis - [0.0, -0.23, 0.0]) < 0.05, "root joint where SMPL-H's is"
    span = vertices[:, 0].max() - vertices[:, 0].min()
    assert 0.9 * height <= span <= 1.1 * height, "T-pose arm span about equals height"
    head = vertices[open_body.part_vertex_ids("head")]
    assert head[:, 2].max() > abs(head[:, 2].min()), "the face (nose) points to +Z"
    assert vertices[open_body.part_vertex_ids("left_hand"), 0].min() > 0.6, "left hand on +X"
    assert vertices[open_body.part_vertex_ids("right_foot"), 0].max() < 0


def test_named_parts_are_connected_and_symmetric(open_body):
    assert len(open_body.part_names) >= 15
    mesh = _mesh(open_body.v_template, open_body)
    for index, name in enumerate(open_body.part_names):
        ids = np.nonzero(open_body.part_labels == index)[0]
        assert len(ids) > 50, f"part {name} has only {len(ids)} vertices"
        face_mask = np.isin(mesh.faces, ids).all(1)
        components = trimesh.graph.connected_components(mesh.face_adjacency[face_mask[mesh.face_adjacency].all(1)],
                                                        nodes=np.nonzero(face_mask)[0])
        largest = max(len(c) for c in components)
        assert largest >= 0.95 * face_mask.sum(), f"part {name} is split into pieces"
        if name.startswith("left_"):
            mirrored = len(open_body.part_vertex_ids("right_" + name[5:]))
            assert abs(mirrored - len(ids)) <= 0.1 * len(ids)


def test_skinning_weights_are_a_partition_of_unity(open_body):
    weights = open_body.weights.numpy()
    assert weights.shape == (open_body.num_vertices, 22)
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)


def test_rest_surface_is_smooth(open_body):
    angles = np.degrees(_mesh(open_body.v_template, open_body).face_adjacency_angles)
    assert angles.max() < 90, "no fold or crease anywhere on the rest mesh"
    assert np.percentile(angles, 99) < 45


@pytest.mark.parametrize("joint,axis,degrees", [("left_knee", 0, 90), ("right_knee", 0, 90),
                                                ("left_elbow", 1, -90), ("right_elbow", 1, 90)])
def test_bending_90_degrees_keeps_the_joint_smooth(open_body, joint, axis, degrees):
    pose = torch.zeros(1, 63)
    pose[0, (open_body.joint_names.index(joint) - 1) * 3 + axis] = math.radians(degrees)
    posed = open_body(body_pose=pose)
    rest_mesh, posed_mesh = _mesh(open_body.v_template, open_body), _mesh(posed.vertices[0].detach(), open_body)
    assert np.degrees(posed_mesh.face_adjacency_angles).max() < 90, "no skin folded over at the bend"
    assert abs(posed_mesh.volume / rest_mesh.volume - 1) < 0.02, "no volume collapse (candy wrapper)"
    index = open_body.joint_names.index(joint)
    rest_clearance = np.linalg.norm(open_body.v_template.numpy() - open_body.joints[index].numpy(), axis=1).min()
    posed_clearance = np.linalg.norm(posed.vertices[0].detach().numpy() - posed.joints[0, index].detach().numpy(), axis=1).min()
    assert posed_clearance > 0.75 * rest_clearance, "the joint keeps its thickness"


def test_forward_is_batched_differentiable_and_shapes_work(open_body):
    pose = torch.zeros(3, 63, requires_grad=True)
    out = open_body(body_pose=pose, transl=torch.tensor([[0.0, 1.0, 0.0]]))
    assert out.vertices.shape == (3, open_body.num_vertices, 3) and out.joints.shape == (3, 22, 3)
    np.testing.assert_allclose(out.vertices[0].detach() - torch.tensor([0, 1.0, 0]), open_body.v_template, atol=1e-5)
    out.vertices.sum().backward()
    assert pose.grad is not None and torch.isfinite(pose.grad).all()
    tall = open_body(betas=torch.tensor([[1.0, 0.0]])).vertices[0]
    height = lambda v: float(v[:, 1].max() - v[:, 1].min())
    assert height(tall) == pytest.approx(1.06 * height(open_body.v_template), rel=1e-3)
    wide = open_body(betas=torch.tensor([[0.0, 1.0]])).vertices[0]
    assert _mesh(wide.detach(), open_body).volume > 1.1 * _mesh(open_body.v_template, open_body).volume


def test_vitruvian_pose_spreads_the_legs(open_body):
    out = open_body(**open_body.vitruvian_pose())
    ankle, hip = (open_body.joint_names.index(name) for name in ("left_ankle", "left_hip"))
    spread = lambda leg: math.degrees(math.atan2(float(leg[0]), float(-leg[1])))
    rest_leg, posed_leg = open_body.joints[ankle] - open_body.joints[hip], out.joints[0, ankle] - out.joints[0, hip]
    assert spread(posed_leg) - spread(rest_leg) == pytest.approx(30, abs=1e-3)
    np.testing.assert_allclose(out.joints[0, 20], open_body.joints[20], atol=1e-5)  # arms stay in the T-pose


@pytest.mark.parametrize("kwargs,message", [
    ({"body_pose": torch.full((1, 63), float("nan"))}, "NaN"),
    ({"body_pose": torch.zeros(1, 60)}, "shape"),
    ({"betas": torch.zeros(2, 2), "body_pose": torch.zeros(3, 63)}, "batch sizes"),
])
def test_bad_parameters_are_refused(open_body, kwargs, message):
    with pytest.raises(InputError, match=message):
        open_body(**kwargs)


def test_cached_body_equals_a_fresh_one(open_body):
    fresh = OpenBody(openbody.generate_open_body())
    np.testing.assert_array_equal(fresh.v_template.numpy(), open_body.v_template.numpy())
