"""SMPL / SMPL-H / SMPL-X through the user's files, tested on synthetic files in the official layouts."""
import json
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp
import smplx
import torch

from engine import rll
from engine.body import load_body
from engine.body.files import load_arrays
from engine.body.topology import TopologyMap
from engine.errors import InputError, MissingAssetError
from fakes import write_compact_segmentation, write_fake_smpl_family


def test_smplx_file_loads_with_official_keys(smplx_models_dir):
    body = load_body("smplx", smplx_models_dir)
    out = body(**body.vitruvian_pose())
    assert body.topology == "smplx-10475" and out.vertices.shape == (1, 10475, 3) and out.joints.shape == (1, 22, 3)
    assert len(body.part_names) >= 15


def test_smplx_forward_matches_the_smplx_package(smplx_models_dir):
    body = load_body("smplx", smplx_models_dir)
    reference = smplx.SMPLX(str(smplx_models_dir / "body/smplx/SMPLX_NEUTRAL.npz"), ext="npz", use_pca=False,
                            num_betas=10, flat_hand_mean=True)
    generator = torch.Generator().manual_seed(0)
    betas, pose = torch.randn(2, 10, generator=generator), 0.3 * torch.randn(2, 63, generator=generator)
    orient, transl = 0.3 * torch.randn(2, 3, generator=generator), torch.randn(2, 3, generator=generator)
    ours = body(betas=betas, body_pose=pose, global_orient=orient, transl=transl)
    theirs = reference(betas=betas, body_pose=pose, global_orient=orient, transl=transl,
                       expression=torch.zeros(2, 10), jaw_pose=torch.zeros(2, 3), leye_pose=torch.zeros(2, 3),
                       reye_pose=torch.zeros(2, 3), left_hand_pose=torch.zeros(2, 45), right_hand_pose=torch.zeros(2, 45))
    torch.testing.assert_close(ours.vertices, theirs.vertices, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.joints, theirs.joints[:, :22], atol=1e-5, rtol=1e-5)


def test_round_trip_on_smplx_topology(tmp_path):
    """Random part-wise labels -> project -> lift -> 0.5 recovers them (parts: compact patches from a segmentation file)."""
    write_fake_smpl_family(tmp_path, "smplx")
    write_compact_segmentation(tmp_path, "smplx-10475", load_body("smplx", tmp_path).v_template.numpy())
    body = load_body("smplx", tmp_path)
    views = rll.render_views(body.vitruvian_vertices(), body.faces, preset="body", resolution=1024, topology=body.topology)
    visible = views.visible_vertices()
    assert visible.mean() >= 0.95
    rng = np.random.default_rng(1)
    ious = []
    for _ in range(5):
        labels = np.isin(body.part_labels, rng.choice(len(body.part_names), size=5, replace=False))
        predicted = rll.lift(views, rll.project(views, labels, min_vertices=2)) >= 0.5
        ious.append((predicted & labels & visible).sum() / ((predicted | labels) & visible).sum())
    assert np.mean(ious) >= 0.98 and min(ious) >= 0.97, ious


class Ch:
    """What chumpy pickles: an object whose state holds the array as ``x``."""

    def __init__(self, x):
        self.x = x


Ch.__module__ = "chumpy.ch"


def test_smplh_pickle_with_chumpy_arrays_loads_safely(tmp_path):
    """Official SMPL(-H) pickles hold chumpy objects; we read their arrays without importing chumpy."""
    npz = write_fake_smpl_family(tmp_path, "smplh")
    arrays = dict(np.load(npz))
    chumpy, chumpy_ch = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    chumpy_ch.Ch = Ch
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": chumpy_ch})
    try:
        arrays["shapedirs"] = Ch(arrays["shapedirs"])
        arrays["J_regressor"] = sp.csc_matrix(arrays["J_regressor"])
        payload = pickle.dumps(arrays, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    npz.unlink()
    (tmp_path / "body/smplh/SMPLH_NEUTRAL.pkl").write_bytes(payload)
    body = load_body("smplh", tmp_path)
    assert body.topology == "smplh-6890" and body(**body.vitruvian_pose()).vertices.shape == (1, 6890, 3)
    torch.testing.assert_close(body.shapedirs, torch.as_tensor(arrays["shapedirs"].x[:, :, :10]))


def test_smplh_matches_the_smplx_package(tmp_path):
    path = write_fake_smpl_family(tmp_path, "smplh")
    body = load_body("smplh", tmp_path)
    data = smplx.utils.Struct(**dict(np.load(path)))
    reference = smplx.SMPLH(str(path), data_struct=data, use_pca=False, num_betas=10, flat_hand_mean=True)
    pose = 0.3 * torch.randn(1, 63, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(body(body_pose=pose).vertices, reference(body_pose=pose).vertices, atol=1e-5, rtol=1e-5)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))
    path = tmp_path / "body/smpl/SMPL_NEUTRAL.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({"v_template": Exploit()}, protocol=2))
    with pytest.raises(InputError, match="print"):
        load_arrays(path, ("v_template",))


def test_missing_files_name_the_expected_path(tmp_path):
    for kind, expected in (("smplx", "body/smplx/SMPLX_NEUTRAL.npz"), ("smplh", "body/smplh/SMPLH_NEUTRAL.pkl"),
                           ("smpl", "body/smpl/SMPL_NEUTRAL.pkl")):
        with pytest.raises(MissingAssetError) as error:
            load_body(kind, tmp_path)
        assert str(tmp_path / expected) in str(error.value)
    with pytest.raises(InputError, match="unknown body kind"):
        load_body("mano", tmp_path)


def test_wrong_shapes_in_a_model_file_are_reported(tmp_path):
    path = write_fake_smpl_family(tmp_path, "smplh")
    arrays = dict(np.load(path))
    arrays["weights"] = arrays["weights"][:, :50]
    np.savez(path, **arrays)
    with pytest.raises(InputError, match="weights has shape"):
        load_body("smplh", tmp_path)


def test_segmentation_file_sets_part_labels(tmp_path):
    write_fake_smpl_family(tmp_path, "smplh")
    parts = {"left_hand": list(range(0, 100)), "torso": list(range(100, 6000))}
    (tmp_path / "body/parts").mkdir(parents=True)
    (tmp_path / "body/parts/smplh-6890.json").write_text(json.dumps(parts))
    body = load_body("smplh", tmp_path)
    np.testing.assert_array_equal(body.part_vertex_ids("left_hand"), np.arange(100))
    assert body.part_names[:2] == ("left_hand", "torso")
    assert (body.part_labels >= 0).all(), "vertices the file misses fall back to skinning parts"
    (tmp_path / "body/parts/smplh-6890.json").write_text(json.dumps({"bad": [0, 7000]}))
    with pytest.raises(InputError, match="outside"):
        load_body("smplh", tmp_path)


def _write_topology_map(root, permutation):
    matrix = sp.csr_matrix((np.ones(10475), (np.arange(10475), permutation)), shape=(10475, 6890))
    (root / "body").mkdir(parents=True, exist_ok=True)
    (root / "body/smpl_to_smplx.pkl").write_bytes(pickle.dumps({"matrix": matrix}, protocol=2))


def test_topology_map_converts_both_ways(tmp_path):
    permutation = np.random.default_rng(0).integers(0, 6890, 10475)
    _write_topology_map(tmp_path, permutation)
    mapping = TopologyMap.from_pretrained(tmp_path)
    labels = (np.arange(6890) % 7 == 0).astype(np.float32)
    on_smplx = mapping.convert(labels, "smplh-6890", "smplx-10475")
    np.testing.assert_array_equal(on_smplx, labels[permutation])
    back = mapping.convert(on_smplx, "smplx-10475", "smplh-6890")
    hit = np.isin(np.arange(6890), permutation)
    np.testing.assert_array_equal(back[hit], labels[hit])
    with pytest.raises(InputError, match="6890 vertices"):
        mapping.convert(np.zeros(10475), "smplh-6890", "smplx-10475")
    with pytest.raises(InputError, match="no conversion"):
        mapping.convert(np.zeros(10475), "smplx-10475", "openbody-v1")


def test_topology_map_missing_or_malformed(tmp_path):
    with pytest.raises(MissingAssetError, match="smpl_to_smplx.pkl"):
        TopologyMap.from_pretrained(tmp_path)
    (tmp_path / "body").mkdir()
    (tmp_path / "body/smpl_to_smplx.pkl").write_bytes(pickle.dumps({"matrix": np.zeros((5, 5))}))
    with pytest.raises(InputError, match="10475 x 6890"):
        TopologyMap.from_pretrained(tmp_path)
