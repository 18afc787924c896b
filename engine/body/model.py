"""One ``BodyModel`` API over the SMPL family (through ``smplx``) and the built-in open body.

``load_body(kind, models_dir)`` is the factory. Every model is a thin ``torch.nn.Module`` around the
pure skinning functions of ``smplx.lbs``, batched, differentiable and on any device.
"""
from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues, lbs

from engine.body import openbody
from engine.body.files import load_arrays
from engine.body.parts import DEFAULT_PART_NAMES, body_ancestor, parts_from_dominant_joint, read_segmentation
from engine.body.skeleton import BODY_JOINT_NAMES, BODY_PARENTS, vitruvian_body_pose
from engine.body.topology import BODY_FILES, TOPOLOGY_VERTEX_COUNTS
from engine.errors import InputError, MissingAssetError
from engine.paths import cache_dir, models_dir as default_models_dir, write_atomically


@dataclass(frozen=True)
class BodyOutput:
    """vertices: (B, V, 3) posed vertices.  joints: (B, 22, 3) posed body joints (SMPL-X body order)."""

    vertices: torch.Tensor
    joints: torch.Tensor


class BodyModel(torch.nn.Module):
    """Common API. Subclasses implement ``_skin(betas, full_pose) -> (vertices, joints)``."""

    topology: str
    num_betas: int
    num_body_joints: int
    num_pose_joints: int  # joints in the full pose (body + hands/face where the model has them)
    joint_names = BODY_JOINT_NAMES
    parents = BODY_PARENTS

    def __init__(self, faces: np.ndarray, part_labels: np.ndarray, part_names: tuple[str, ...]):
        super().__init__()
        self.register_buffer("faces", torch.as_tensor(np.asarray(faces, dtype=np.int64)), persistent=False)
        self.part_labels = np.asarray(part_labels, dtype=np.int64)
        self.part_names = tuple(part_names)

    @property
    def num_vertices(self) -> int:
        return TOPOLOGY_VERTEX_COUNTS[self.topology]

    @property
    def device(self) -> torch.device:
        return self.faces.device

    @property
    def template_dtype(self) -> torch.dtype:
        return self.v_template.dtype

    def part_vertex_ids(self, part: str) -> np.ndarray:
        if part not in self.part_names:
            raise InputError(f"unknown body part {part!r}; this body has {list(self.part_names)}")
        return np.nonzero(self.part_labels == self.part_names.index(part))[0]

    def vitruvian_pose(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for ``forward`` that give InteractVLM's canonical Vitruvian pose."""
        return {"body_pose": vitruvian_body_pose(self.num_body_joints).to(self.device)}

    def vitruvian_vertices(self) -> torch.Tensor:
        """(V, 3) neutral-shape vertices in the Vitruvian pose."""
        with torch.no_grad():
            return self.forward(**self.vitruvian_pose()).vertices[0]

    def _parameter(self, value, name: str, width: int) -> torch.Tensor:
        if value is None:
            return torch.zeros(1, width, dtype=self.template_dtype, device=self.device)
        tensor = torch.as_tensor(value, dtype=self.template_dtype, device=self.device)
        tensor = tensor.reshape(1, -1) if tensor.dim() == 1 else tensor
        if tensor.dim() != 2 or tensor.shape[1] != width:
            raise InputError(f"{name} must have shape (B, {width}), got {tuple(tensor.shape)}")
        if not torch.isfinite(tensor).all():
            raise InputError(f"{name} contains NaN or inf")
        return tensor

    def forward(self, betas=None, body_pose=None, global_orient=None, transl=None) -> BodyOutput:
        """betas (B, num_betas), body_pose (B, num_body_joints*3) axis-angle, global_orient (B, 3), transl (B, 3).

        Any argument may be left out (zeros) or given with batch 1 (broadcast).
        """
        widths = {"betas": self.num_betas, "body_pose": self.num_body_joints * 3, "global_orient": 3, "transl": 3}
        values = dict(zip(widths, (betas, body_pose, global_orient, transl)))
        params = {name: self._parameter(values[name], name, width) for name, width in widths.items()}
        sizes = {tensor.shape[0] for tensor in params.values()} - {1}
        if len(sizes) > 1:
            raise InputError(f"batch sizes differ between parameters: {sorted(sizes)}")
        batch = sizes.pop() if sizes else 1
        params = {name: tensor.expand(batch, -1) for name, tensor in params.items()}
        hidden = torch.zeros(batch, 3 * (self.num_pose_joints - 1 - self.num_body_joints),
                             dtype=self.template_dtype, device=self.device)  # hands, jaw, eyes stay at rest
        full_pose = torch.cat([params["global_orient"], params["body_pose"], hidden], dim=1)
        vertices, joints = self._skin(params["betas"], full_pose)
        offset = params["transl"][:, None]
        return BodyOutput(vertices=vertices + offset, joints=joints[:, : len(BODY_JOINT_NAMES)] + offset)


class OpenBody(BodyModel):
    """The procedural open body: 22 joints, 2 shape parameters (height, girth), no pose correctives."""

    topology = openbody.TOPOLOGY_ID
    num_body_joints = len(BODY_JOINT_NAMES) - 1
    num_pose_joints = len(BODY_JOINT_NAMES)
    num_betas = len(openbody.SHAPE_NAMES)

    def __init__(self, data: openbody.OpenBodyData):
        super().__init__(data.faces, data.part_labels, DEFAULT_PART_NAMES)
        if len(data.vertices) != self.num_vertices:
            raise RuntimeError(f"open body has {len(data.vertices)} vertices, the registry says {self.num_vertices}")
        self.register_buffer("v_template", torch.as_tensor(data.vertices))
        self.register_buffer("joints", torch.as_tensor(data.joints))
        self.register_buffer("weights", torch.as_tensor(data.weights))
        self.register_buffer("shape_dirs", torch.as_tensor(data.shape_dirs))
        self.register_buffer("joint_shape_dirs", torch.as_tensor(data.joint_shape_dirs))
        self.register_buffer("parent_index", torch.tensor(BODY_PARENTS), persistent=False)

    def _skin(self, betas, full_pose):
        shaped = self.v_template + torch.einsum("vcs,bs->bvc", self.shape_dirs, betas)
        joints = self.joints + torch.einsum("jcs,bs->bjc", self.joint_shape_dirs, betas)
        rotations = batch_rodrigues(full_pose.reshape(-1, 3)).view(full_pose.shape[0], -1, 3, 3)
        posed_joints, transforms = batch_rigid_transform(rotations, joints, self.parent_index, dtype=betas.dtype)
        per_vertex = torch.einsum("vj,bjkl->bvkl", self.weights, transforms)
        vertices = torch.einsum("bvkl,bvl->bvk", per_vertex[..., :3, :3], shaped) + per_vertex[..., :3, 3]
        return vertices, posed_joints


@dataclass(frozen=True)
class SmplFamilySpec:
    name: str
    topology: str
    num_joints: int
    num_body_joints: int
    files: tuple[str, ...]
    licence_hint: str


SMPL_FAMILY: dict[str, SmplFamilySpec] = {
    "smplx": SmplFamilySpec("smplx", "smplx-10475", 55, 21, BODY_FILES["smplx-10475"],
                            "Register at smpl-x.is.tue.mpg.de and download the SMPL-X model files."),
    "smplh": SmplFamilySpec("smplh", "smplh-6890", 52, 21, BODY_FILES["smplh-6890"],
                            "Register at mano.is.tue.mpg.de and download the extended SMPL+H model."),
    "smpl": SmplFamilySpec("smpl", "smpl-6890", 24, 23, BODY_FILES["smpl-6890"],
                           "Register at smpl.is.tue.mpg.de and download the neutral SMPL model."),
}
_MODEL_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
NUM_BETAS = 10


def find_model_file(spec: SmplFamilySpec, models_dir: Path) -> Path:
    for relative in spec.files:
        if (models_dir / relative).exists():
            return models_dir / relative
    raise MissingAssetError(f"{spec.name.upper()} body model", models_dir / spec.files[0],
                            f"{spec.licence_hint} Accepted names: {', '.join(spec.files)}.")


def _check_model_arrays(arrays: dict, spec: SmplFamilySpec, path: Path) -> None:
    vertices = TOPOLOGY_VERTEX_COUNTS[spec.topology]
    expected = {"v_template": (vertices, 3), "weights": (vertices, spec.num_joints),
                "J_regressor": (spec.num_joints, vertices), "kintree_table": (2, spec.num_joints)}
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise InputError(f"{path}: {key} has shape {arrays[key].shape}, a {spec.name.upper()} file has {shape}")
    if arrays["shapedirs"].shape[:2] != (vertices, 3) or arrays["shapedirs"].shape[2] < NUM_BETAS:
        raise InputError(f"{path}: shapedirs has shape {arrays['shapedirs'].shape}, expected ({vertices}, 3, >={NUM_BETAS})")
    if arrays["posedirs"].shape != (vertices, 3, (spec.num_joints - 1) * 9):
        raise InputError(f"{path}: posedirs has shape {arrays['posedirs'].shape}")
    faces = arrays["f"]
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= vertices:
        raise InputError(f"{path}: faces must be (F, 3) with ids in 0..{vertices - 1}")
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        if not np.isfinite(arrays[key]).all():
            raise InputError(f"{path}: {key} contains NaN or inf")


class SmplFamilyBody(BodyModel):
    """SMPL, SMPL-H or SMPL-X from the user's licensed file, posed with ``smplx.lbs.lbs``."""

    num_betas = NUM_BETAS

    def __init__(self, spec: SmplFamilySpec, arrays: dict[str, np.ndarray], part_file: Path | None):
        self.topology, self.num_body_joints, self.num_pose_joints = spec.topology, spec.num_body_joints, spec.num_joints
        parents = arrays["kintree_table"][0].astype(np.int64)
        parents[0] = -1
        dominant = body_ancestor(parents)[np.argmax(arrays["weights"], axis=1)]
        joints = arrays["J_regressor"] @ arrays["v_template"]
        labels = parts_from_dominant_joint(dominant, arrays["v_template"], joints)
        names = DEFAULT_PART_NAMES
        if part_file is not None and part_file.exists():
            labels, names = read_segmentation(part_file, len(arrays["v_template"]), labels)
        super().__init__(arrays["f"], labels, names)
        as_float = lambda key: torch.as_tensor(np.asarray(arrays[key], dtype=np.float32))
        self.register_buffer("v_template", as_float("v_template"))
        self.register_buffer("shapedirs", as_float("shapedirs")[:, :, :NUM_BETAS].contiguous())
        posedirs = np.asarray(arrays["posedirs"], dtype=np.float32)
        self.register_buffer("posedirs", torch.as_tensor(posedirs.reshape(-1, posedirs.shape[-1]).T.copy()))
        self.register_buffer("J_regressor", as_float("J_regressor"))
        self.register_buffer("lbs_weights", as_float("weights"))
        self.register_buffer("parent_index", torch.as_tensor(parents), persistent=False)

    def _skin(self, betas, full_pose):
        return lbs(betas, full_pose, self.v_template, self.shapedirs, self.posedirs, self.J_regressor,
                   self.parent_index, self.lbs_weights, pose2rot=True)


def _open_body_cache_path() -> Path:
    source = inspect.getsource(openbody).encode()
    return cache_dir("body") / f"{openbody.TOPOLOGY_ID}-{hashlib.sha256(source).hexdigest()[:12]}.npz"


def load_open_body_data() -> openbody.OpenBodyData:
    """The open body, generated once and cached under ``var/cache/body`` (keyed by its source code)."""
    path = _open_body_cache_path()
    if path.exists():
        with np.load(path, allow_pickle=False) as archive:
            return openbody.OpenBodyData(**{key: archive[key] for key in archive.files})
    data = openbody.generate_open_body()
    write_atomically(path, lambda handle: np.savez(handle, **data.__dict__))
    return data


BODY_KINDS = ("openbody",) + tuple(SMPL_FAMILY)


def load_body(kind: str = "openbody", models_dir: Path | str | None = None, device: torch.device | str | None = None) -> BodyModel:
    """The one factory: ``openbody`` always works; ``smplx``, ``smplh`` and ``smpl`` need the user's files."""
    if kind == "openbody":
        model = OpenBody(load_open_body_data())
    elif kind in SMPL_FAMILY:
        spec = SMPL_FAMILY[kind]
        root = default_models_dir(models_dir)
        path = find_model_file(spec, root)
        arrays = load_arrays(path, _MODEL_KEYS)
        _check_model_arrays(arrays, spec, path)
        model = SmplFamilyBody(spec, arrays, root / "body" / "parts" / f"{spec.topology}.json")
    else:
        raise InputError(f"unknown body kind {kind!r}; choose one of {BODY_KINDS}")
    return model.to(device) if device is not None else model
