"""Pose priors: VPoser v2 (``V02_05``) loaded by our own code, and the open-body prior that needs no files.

Open-body prior (always available)
    Hand-set anatomical ranges per joint and axis-angle component (``JOINT_LIMITS_DEG``, degrees, in
    the joint's rest frame, which is the body frame in the T-pose: +X the body's left, +Y up, +Z
    forward; e.g. knee flexion is +x, hip flexion -x, left elbow flexion -y). ``joint_limit_energy`` penalises leaving them
    (the joint-angle prior, used for every body) and ``gaussian_pose_energy`` pulls towards the rest
    pose with sigma = a quarter of each range (the Gaussian over the pose). The table is not learned
    from data; it keeps single-view fits away from knees and elbows bent backwards.

VPoser v2 (when ``models/vposer/V02_05`` is present)
    The release folder of human_body_prior (``V02_05.yaml`` + ``snapshots/*.ckpt``, a
    pytorch-lightning checkpoint whose ``state_dict`` keys start with ``vp_model.``)::

        vp_model.encoder_net.1   BatchNorm1d(63)          vp_model.decoder_net.0  Linear(latentD, N)
        vp_model.encoder_net.2   Linear(63, N)            vp_model.decoder_net.3  Linear(N, N)
        vp_model.encoder_net.4   BatchNorm1d(N)           vp_model.decoder_net.5  Linear(N, 21 * 6)
        vp_model.encoder_net.6   Linear(N, N)
        vp_model.encoder_net.7   Linear(N, N)
        vp_model.encoder_net.8   .mu / .logvar: Linear(N, latentD)

    with ``model_params: {num_neurons: N, latentD: 32}`` in the yaml (N = 512 in V02_05). The
    decoder ends with the interleaved 6D layout (``rotations.columns_6d_to_matrix``). Loading never
    runs pickled code: tensors are read with ``weights_only=True``, and if the checkpoint also holds
    pickled trainer objects (callbacks, hyper-parameters) those are replaced by inert placeholders.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from engine.body.skeleton import BODY_JOINT_NAMES
from engine.errors import InputError, MissingAssetError
from engine.fitting.rotations import columns_6d_to_matrix, matrix_to_axis_angle

NUM_PRIOR_JOINTS = 21  # the body_pose joints shared by SMPL-X, SMPL-H and the open body
VPOSER_DIR = "vposer/V02_05"
VPOSER_SNAPSHOTS = ("V02_05_epoch=13_val_loss=0.03.ckpt", "V02_05_epoch=08_val_loss=0.03.ckpt")  # as released
VPOSER_HINT = ("Register at smpl-x.is.tue.mpg.de, download VPoser v2.0 (V02_05) and unpack it so that "
               "V02_05.yaml and snapshots/*.ckpt sit in that folder. Without it the open-body prior is used.")

# (x, y, z) ranges in degrees; left side listed, the right side mirrors y and z.
_LEFT_AND_SPINE_LIMITS = {
    "left_hip": ((-125, 30), (-40, 40), (-30, 70)),
    "spine1": ((-30, 50), (-35, 35), (-30, 30)),
    "left_knee": ((-5, 150), (-10, 10), (-10, 10)),
    "spine2": ((-20, 30), (-25, 25), (-20, 20)),
    "left_ankle": ((-40, 45), (-25, 25), (-25, 25)),
    "spine3": ((-20, 30), (-25, 25), (-20, 20)),
    "left_foot": ((-30, 30), (-10, 10), (-10, 10)),
    "neck": ((-40, 50), (-50, 50), (-30, 30)),
    "left_collar": ((-15, 15), (-20, 20), (-15, 25)),
    "head": ((-30, 30), (-40, 40), (-25, 25)),
    "left_shoulder": ((-90, 90), (-110, 50), (-95, 95)),
    "left_elbow": ((-60, 60), (-150, 5), (-10, 10)),
    "left_wrist": ((-60, 60), (-45, 45), (-80, 80)),
}
JOINT_LIMITS_DEG: dict[str, tuple[tuple[float, float], ...]] = {}
for _name in BODY_JOINT_NAMES[1:]:
    if _name.startswith("right_"):
        x, y, z = _LEFT_AND_SPINE_LIMITS["left_" + _name[6:]]
        JOINT_LIMITS_DEG[_name] = (x, (-y[1], -y[0]), (-z[1], -z[0]))
    else:
        JOINT_LIMITS_DEG[_name] = _LEFT_AND_SPINE_LIMITS[_name]


# The Gaussian's mean: standing relaxed, arms down at the sides (every other joint at rest).
RELAXED_MEAN_DEG = {"left_shoulder": (0.0, 0.0, -60.0), "right_shoulder": (0.0, 0.0, 60.0)}


@dataclass(frozen=True)
class OpenBodyPrior:
    """The joint-limit and Gaussian tables as (63,) tensors (21 joints x axis-angle xyz), radians."""

    lower: torch.Tensor
    upper: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def default(cls, dtype=torch.float32, device=None) -> "OpenBodyPrior":
        limits = torch.tensor([JOINT_LIMITS_DEG[name] for name in BODY_JOINT_NAMES[1:]], dtype=torch.float64)
        limits = torch.deg2rad(limits).reshape(-1, 2)
        lower, upper = limits[:, 0], limits[:, 1]
        as_tensor = lambda t: t.to(dtype=dtype, device=device)
        mean = torch.zeros(len(BODY_JOINT_NAMES) - 1, 3, dtype=torch.float64)
        for name, value in RELAXED_MEAN_DEG.items():
            mean[BODY_JOINT_NAMES.index(name) - 1] = torch.tensor(value, dtype=torch.float64)
        return cls(as_tensor(lower), as_tensor(upper), as_tensor(torch.deg2rad(mean).reshape(-1)), as_tensor((upper - lower) / 4))


# ------------------------------------------------------------------------------------------ VPoser
class _NormalHead(torch.nn.Module):
    def __init__(self, width: int, latent_dim: int):
        super().__init__()
        self.mu = torch.nn.Linear(width, latent_dim)
        self.logvar = torch.nn.Linear(width, latent_dim)


class VPoser(torch.nn.Module):
    """VPoser v2's encoder and decoder, with module indices as in the release (so keys load 1:1).

    ``decode(latent)`` gives (B, 21, 3, 3) rotations; ``decode_axis_angle`` (B, 63); ``encode_mean``
    the posterior mean of a (B, 63) axis-angle pose. Dropout is inactive (the model stays in eval mode).
    """

    def __init__(self, num_neurons: int = 512, latent_dim: int = 32):
        super().__init__()
        features = NUM_PRIOR_JOINTS * 3
        self.latent_dim = latent_dim
        self.encoder_net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.BatchNorm1d(features), torch.nn.Linear(features, num_neurons),
            torch.nn.LeakyReLU(), torch.nn.BatchNorm1d(num_neurons), torch.nn.Dropout(0.1),
            torch.nn.Linear(num_neurons, num_neurons), torch.nn.Linear(num_neurons, num_neurons),
            _NormalHead(num_neurons, latent_dim))
        self.decoder_net = torch.nn.Sequential(
            torch.nn.Linear(latent_dim, num_neurons), torch.nn.LeakyReLU(), torch.nn.Dropout(0.1),
            torch.nn.Linear(num_neurons, num_neurons), torch.nn.LeakyReLU(),
            torch.nn.Linear(num_neurons, NUM_PRIOR_JOINTS * 6))
        self.eval()

    def train(self, mode: bool = True):  # a prior is never trained here: keep BatchNorm and Dropout in eval
        return super().train(False)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return columns_6d_to_matrix(self.decoder_net(latent).reshape(-1, NUM_PRIOR_JOINTS, 6))

    def decode_axis_angle(self, latent: torch.Tensor) -> torch.Tensor:
        return matrix_to_axis_angle(self.decode(latent)).reshape(latent.shape[0], -1)

    def encode_mean(self, body_pose: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder_net[:-1](body_pose[:, : NUM_PRIOR_JOINTS * 3])
        return self.encoder_net[-1].mu(hidden)

    @classmethod
    def from_pretrained(cls, path: Path | str) -> "VPoser":
        """Load the ``V02_05`` release folder (see the module docstring)."""
        folder = Path(path)
        config, checkpoint = _vposer_files(folder)
        params = _vposer_params(config)
        model = cls(**params)
        state = _read_state_dict(checkpoint)
        prefix = "vp_model."
        ours = {key[len(prefix):]: value for key, value in state.items()
                if key.startswith(prefix + "encoder_net.") or key.startswith(prefix + "decoder_net.")}
        expected = model.state_dict()
        missing = sorted(key for key in set(expected) - set(ours) if not key.endswith("num_batches_tracked"))
        if missing:
            raise InputError(f"{checkpoint} is not a VPoser V02_05 checkpoint: it lacks {missing[:4]} "
                             f"({len(missing)} keys missing)")
        for key, value in ours.items():
            if key in expected and value.shape != expected[key].shape:
                raise InputError(f"{checkpoint}: {key} has shape {tuple(value.shape)}, {config.name} implies "
                                 f"{tuple(expected[key].shape)}")
        model.load_state_dict({key: ours[key] for key in expected if key in ours}, strict=False)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model


def _vposer_files(folder: Path) -> tuple[Path, Path]:
    config = folder / "V02_05.yaml"
    if not config.is_file():
        yamls = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
        if not yamls:
            raise MissingAssetError("VPoser v2 config (V02_05.yaml)", config, VPOSER_HINT)
        config = yamls[0]
    snapshots = sorted((folder / "snapshots").glob("*.ckpt")) if (folder / "snapshots").is_dir() else []
    if not snapshots:
        raise MissingAssetError("VPoser v2 checkpoint", folder / "snapshots" / VPOSER_SNAPSHOTS[0], VPOSER_HINT)
    return config, snapshots[-1]  # names sort by epoch; the release ships its best snapshot last


def _vposer_params(config: Path) -> dict[str, int]:
    try:
        data = yaml.safe_load(config.read_text())
        params = data["model_params"]
        return {"num_neurons": int(params["num_neurons"]), "latent_dim": int(params["latentD"])}
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"{config} lacks model_params.num_neurons / model_params.latentD ({error})") from error


class _Inert:
    """Stands in for any pickled object that is not a tensor: it accepts its state and does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _TensorsOnlyUnpickler(pickle.Unpickler):
    _TORCH = ("torch._utils", "torch.serialization", "torch")

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return super().find_class(module, name)
        if module in self._TORCH and (name.startswith("_rebuild") or name.endswith("Storage") or name in ("Size", "device")
                                      or isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        return _Inert


class _TensorsOnlyPickle:
    """A ``pickle_module`` for ``torch.load``: only tensor rebuilders are resolved, nothing else runs."""

    Unpickler = _TensorsOnlyUnpickler
    load = staticmethod(pickle.load)
    __name__ = "tensors_only_pickle"


def _read_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    try:
        try:
            loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # trainer objects next to the weights: read tensors only
            loaded = torch.load(checkpoint, map_location="cpu", weights_only=False, pickle_module=_TensorsOnlyPickle)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:
        raise InputError(f"{checkpoint} is not a readable torch checkpoint ({error})") from error
    state = loaded.get("state_dict") if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{checkpoint} has no 'state_dict' (a pytorch-lightning checkpoint has one)")
    return {key: value for key, value in state.items() if isinstance(key, str) and isinstance(value, torch.Tensor)}


def load_vposer(models_dir: Path | str, device=None) -> VPoser:
    """VPoser from ``<models>/vposer/V02_05``; MissingAssetError (naming the path) when absent."""
    model = VPoser.from_pretrained(Path(models_dir) / VPOSER_DIR)
    return model.to(device) if device is not None else model
