"""Pose priors: the open-body joint-limit table's directions, and VPoser v2 from a tiny V02_05-layout release."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.body.skeleton import BODY_JOINT_NAMES
from engine.errors import InputError, MissingAssetError
from engine.fitting import energies
from engine.fitting.priors import JOINT_LIMITS_DEG, VPOSER_DIR, OpenBodyPrior, VPoser, load_vposer
from vposer_fakes import LATENT, RunsCode, write_tiny_vposer
from engine.fitting.rotations import axis_angle_to_matrix

def _posed_joints(body, name, axis, degrees):
    pose = torch.zeros(1, 63)
    pose[0, (BODY_JOINT_NAMES.index(name) - 1) * 3 + axis] = np.radians(degrees)
    with torch.no_grad():
        return body(body_pose=pose).joints[0]


@pytest.mark.parametrize("joint, axis, degrees, moved, forward", [
    ("left_knee", 0, 60, "left_ankle", -1),   # knee flexion (+x) swings the shin backwards
    ("right_knee", 0, 60, "right_ankle", -1),
    ("left_hip", 0, -60, "left_knee", +1),    # hip flexion (-x) lifts the thigh forwards
    ("left_elbow", 1, -60, "left_wrist", +1),  # left elbow flexion (-y) brings the hand forwards
    ("right_elbow", 1, 60, "right_wrist", +1),
    ("spine1", 0, 30, "neck", +1),            # trunk flexion (+x) leans forwards (30 deg extension is allowed too)
])
def test_limit_table_allows_the_anatomical_direction(open_body, joint, axis, degrees, moved, forward):
    rest = _posed_joints(open_body, joint, axis, 0)[BODY_JOINT_NAMES.index(moved)]
    bent = _posed_joints(open_body, joint, axis, degrees)[BODY_JOINT_NAMES.index(moved)]
    assert forward * (bent[2] - rest[2]) > 0.05
    low, high = JOINT_LIMITS_DEG[joint][axis]
    assert low <= degrees <= high
    if joint != "spine1":
        assert not low <= -degrees <= high  # hinges and the hip: the opposite bend is out of range


def test_joint_limit_energy_and_gaussian_by_hand():
    prior = OpenBodyPrior.default()
    pose = torch.zeros(1, 63)
    knee = (BODY_JOINT_NAMES.index("left_knee") - 1) * 3
    pose[0, knee] = -np.radians(25)  # 20 degrees past the -5 degree limit
    assert float(energies.joint_limit_energy(pose, prior.lower, prior.upper)) == pytest.approx(np.radians(20) ** 2, rel=1e-5)
    sigma = np.radians(155) / 4
    expected = float((((prior.mean - pose[0]) / prior.std) ** 2).sum())
    assert float(energies.gaussian_pose_energy(pose, prior.mean, prior.std)) == pytest.approx(expected, rel=1e-6)
    assert float(prior.std[knee]) == pytest.approx(sigma, rel=1e-6)


# ------------------------------------------------------------------------------------------ VPoser
def _reference_decode(model: VPoser, latent: torch.Tensor) -> np.ndarray:
    """The decoder by hand in numpy: three linear layers, leaky ReLU, interleaved 6D, Gram-Schmidt on columns."""
    weights = {key: value.numpy().astype(np.float64) for key, value in model.state_dict().items()}
    leaky = lambda x: np.where(x > 0, x, 0.01 * x)
    hidden = leaky(latent.numpy() @ weights["decoder_net.0.weight"].T + weights["decoder_net.0.bias"])
    hidden = leaky(hidden @ weights["decoder_net.3.weight"].T + weights["decoder_net.3.bias"])
    out = (hidden @ weights["decoder_net.5.weight"].T + weights["decoder_net.5.bias"]).reshape(-1, 21, 3, 2)
    a1, a2 = out[..., 0], out[..., 1]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 /= np.linalg.norm(b2, axis=-1, keepdims=True)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-1)


def test_vposer_loads_from_the_release_layout_and_decodes_like_the_reference(tmp_path):
    original = write_tiny_vposer(tmp_path)
    loaded = load_vposer(tmp_path)
    latent = torch.randn(3, LATENT, generator=torch.Generator().manual_seed(2))
    matrices = loaded.decode(latent)
    np.testing.assert_allclose(matrices.numpy(), _reference_decode(original, latent), atol=1e-5)
    axis_angle = loaded.decode_axis_angle(latent)
    assert axis_angle.shape == (3, 63)
    np.testing.assert_allclose(axis_angle_to_matrix(axis_angle.reshape(3, 21, 3)).numpy(), matrices.numpy(), atol=1e-5)
    pose = torch.randn(2, 63, generator=torch.Generator().manual_seed(3)) * 0.2
    np.testing.assert_allclose(loaded.encode_mean(pose).detach().numpy(), original.encode_mean(pose).detach().numpy(), atol=1e-6)
    assert not any(p.requires_grad for p in loaded.parameters())
    loaded.train()
    assert not loaded.training  # a prior stays in eval mode (BatchNorm running stats, no dropout)


def test_pickled_code_in_the_checkpoint_never_runs(tmp_path):
    marker = tmp_path / "ran"
    write_tiny_vposer(tmp_path, extra={"hyper_parameters": RunsCode(marker)})
    load_vposer(tmp_path)
    assert not marker.exists()


def test_missing_vposer_names_the_path(tmp_path):
    with pytest.raises(MissingAssetError) as error:
        load_vposer(tmp_path)
    assert str(tmp_path / VPOSER_DIR / "V02_05.yaml") in str(error.value)
    (tmp_path / VPOSER_DIR).mkdir(parents=True)
    (tmp_path / VPOSER_DIR / "V02_05.yaml").write_text("model_params: {num_neurons: 4, latentD: 2}\n")
    with pytest.raises(MissingAssetError, match="snapshots"):
        load_vposer(tmp_path)


def test_bad_vposer_files(tmp_path):
    write_tiny_vposer(tmp_path / "a", yaml_text="general: {}\n")
    with pytest.raises(InputError, match="latentD"):
        load_vposer(tmp_path / "a")
    write_tiny_vposer(tmp_path / "b", state_filter=lambda key: "decoder_net.5" not in key)
    with pytest.raises(InputError, match="decoder_net.5"):
        load_vposer(tmp_path / "b")
    write_tiny_vposer(tmp_path / "c", yaml_text="model_params: {num_neurons: 8, latentD: 4}\n")
    with pytest.raises(InputError, match="has shape"):
        load_vposer(tmp_path / "c")
    folder = tmp_path / "d" / VPOSER_DIR / "snapshots"
    folder.mkdir(parents=True)
    (folder.parent / "V02_05.yaml").write_text("model_params: {num_neurons: 8, latentD: 4}\n")
    (folder / "x.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable"):
        load_vposer(tmp_path / "d")
