"""What the HOI fit takes, checked: the body (four sources), the camera, the object mask and the contacts.

Everything lives in one frame, the **OpenCV camera frame** of the image (x right, y down, z forward,
metres; REFERENCE.md section 1), as in the release's ``optim/``.

Body parameter files (``load_body_file``): ``.npz`` (no pickled objects), ``.json`` or ``.pkl`` (read with
a restricted unpickler that builds only numpy arrays and plain containers). Accepted keys:

    global_orient   (3,)   axis-angle of the pelvis                                     required
    body_pose       (J*3,) or (J, 3) axis-angle, J = 21 (SMPL-X/SMPL-H/open body), 23 (SMPL)   required
    betas           (<=B,) shape; missing trailing values are zero                       required
    transl          (3,)   translation                                                   required
    model_type      "smplx" (default) | "smplh" | "smpl" | "openbody"
    cam_R, cam_t    (3, 3), (3,) world -> OpenCV camera (column vectors); default identity: the
                    parameters already place the body in the camera frame (as regressors output it)
    focal           (1,) or (2,) pixels; principal_point (2,) pixels (default: the image centre)
    bbox            (4,) x, y, w, h of the person box in OSX's convention: its virtual camera has focal
                    5000 for a 256 x 192 (H x W) crop, so fx = 5000 / 192 * w, fy = 5000 / 256 * h and
                    the principal point (96, 128) of the crop maps to (x + w / 2, y + h / 2)
    vertices        (V, 3) a posed mesh instead of parameters (V = a body topology's vertex count);
                    OSX's own file (``smpl_vertices``, ``smpl_faces``, ``bbox_2``) is read the same way

A posed body mesh (.obj/.ply) is accepted when its vertex count is a body topology's. Without any camera
in the body file, the camera is a pinhole with focal ``max(H, W)`` at the image centre.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from engine.body.topology import TOPOLOGY_VERTEX_COUNTS
from engine.errors import InputError
from engine.mesh import as_faces
from engine.paths import read_bounded

MAX_BODY_FILE_BYTES = 64 * 1024 ** 2
BODY_EXTENSIONS = (".npz", ".json", ".pkl", ".obj", ".ply")
PARAMETER_KEYS = ("global_orient", "body_pose", "betas", "transl")
MODEL_TYPES = {"smplx": "smplx", "smplh": "smplh", "smpl": "smpl", "openbody": "openbody"}
OSX_FOCAL, OSX_CROP = 5000.0, (256.0, 192.0)  # OSX's virtual focal and its body crop (H, W)
ACCEPTED_BODY = ("a body parameter file (.npz, .json or .pkl with global_orient, body_pose, betas, transl) "
                 "or a posed body mesh (.obj, .ply) with a body topology's vertex count "
                 f"({', '.join(f'{n} for {t}' for t, n in TOPOLOGY_VERTEX_COUNTS.items())})")


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera in pixels (OpenCV): ``u = fx x / z + cx`` (column), ``v = fy y / z + cy`` (row)."""

    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    def scaled(self, factor: float) -> "Intrinsics":
        """The same camera for an image resized by ``factor`` (pixel centres stay at integers)."""
        return Intrinsics(self.fx * factor, self.fy * factor, (self.cx + 0.5) * factor - 0.5,
                          (self.cy + 0.5) * factor - 0.5)

    @classmethod
    def default(cls, image_size) -> "Intrinsics":
        height, width = image_size
        focal = float(max(height, width))
        return cls(focal, focal, width / 2 - 0.5, height / 2 - 0.5)

    @classmethod
    def from_osx_bbox(cls, bbox) -> "Intrinsics":
        x, y, w, h = (float(v) for v in _finite(bbox, "bbox", (4,)))
        if w <= 0 or h <= 0:
            raise InputError(f"bbox width and height must be positive, got {w} x {h}")
        return cls(OSX_FOCAL / OSX_CROP[1] * w, OSX_FOCAL / OSX_CROP[0] * h, x + w / 2, y + h / 2)


def project(points: torch.Tensor, camera: Intrinsics) -> torch.Tensor:
    """(..., P, 3) camera-frame points -> (..., P, 3) screen (column, row, depth); depth kept away from 0."""
    depth = points[..., 2]
    safe = torch.where(depth.abs() > 1e-6, depth, torch.full_like(depth, 1e-6))
    return torch.stack([camera.fx * points[..., 0] / safe + camera.cx, camera.fy * points[..., 1] / safe + camera.cy,
                        depth], dim=-1)


def back_project(row: float, col: float, depth: float, camera: Intrinsics) -> np.ndarray:
    """The camera-frame point at ``depth`` seen at pixel (row, col)."""
    return np.array([(col - camera.cx) / camera.fx * depth, (row - camera.cy) / camera.fy * depth, depth])


@dataclass(frozen=True)
class BodyInput:
    """The fixed body of a fit.

    vertices: (V, 3) float32 in the OpenCV camera frame.  faces: (F, 3) int64.  topology: its id.
    camera: intrinsics carried by the body file, or None.  source: where the body came from, in words.
    """

    vertices: np.ndarray
    faces: np.ndarray
    topology: str
    source: str
    camera: Intrinsics | None = None

    def __post_init__(self):
        vertices = np.array(self.vertices, dtype=np.float32)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.isfinite(vertices).all():
            raise InputError(f"the body's vertices must be a finite (V, 3) array, got shape {vertices.shape}")
        expected = TOPOLOGY_VERTEX_COUNTS.get(self.topology)
        if expected != len(vertices):
            raise InputError(f"the body has {len(vertices)} vertices but topology {self.topology} has {expected}")
        faces = as_faces(np.asarray(self.faces), len(vertices), name="body faces").numpy()
        if (vertices[:, 2] <= 0).mean() > 0.5:
            raise InputError("most of the body is behind the camera (z <= 0 in the OpenCV camera frame); "
                             "check transl or cam_R / cam_t")
        for name, value in (("vertices", vertices), ("faces", faces)):
            value.flags.writeable = False
            object.__setattr__(self, name, value)


def topology_of_count(count: int) -> str:
    """The body topology with ``count`` vertices (SMPL-H's id for 6890), else InputError."""
    matches = [topology for topology, n in TOPOLOGY_VERTEX_COUNTS.items() if n == count and topology != "smpl-6890"]
    if not matches:
        raise InputError(f"a body mesh must have a body topology's vertex count, got {count}; accepted: "
                         + ", ".join(f"{n} ({t})" for t, n in TOPOLOGY_VERTEX_COUNTS.items()))
    return matches[0]


def _finite(value, name: str, shape=None) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numbers") from None
    if shape is not None and array.size != int(np.prod(shape)):
        raise InputError(f"{name} must have {int(np.prod(shape))} values, got {array.size}")
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or inf")
    return array.reshape(shape) if shape is not None else array


def read_parameter_file(source, name: str) -> dict:
    """The body file's top-level mapping of arrays (npz without pickles, json, restricted pkl)."""
    extension = PurePosixPath(name).suffix.lower()
    data = _read_limited(source, name)
    if extension == ".npz":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except ValueError as error:
            raise InputError(f"{name!r} holds pickled objects or is not a valid npz ({error}); save plain arrays") from None
        except (OSError, EOFError):
            raise InputError(f"{name!r} is not a valid npz archive") from None
    if extension == ".json":
        try:
            content = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(f"{name!r} is not valid UTF-8 JSON") from None
        if not isinstance(content, dict):
            raise InputError(f"{name!r} must hold a JSON object of arrays")
        return content
    if extension == ".pkl":
        return _restricted_pickle(data, name)
    raise InputError(f"{name!r}: unknown body file type {extension or '(none)'}; accepted: {ACCEPTED_BODY}")


def _restricted_pickle(data: bytes, name: str) -> dict:
    import tempfile

    from engine.body.files import load_pickle

    with tempfile.NamedTemporaryFile(suffix=".pkl") as handle:
        handle.write(data)
        handle.flush()
        try:
            content = load_pickle(Path(handle.name))
        except InputError as error:
            raise InputError(f"{name!r}: {str(error).replace(handle.name, 'the file')}") from None
    return {str(key): value for key, value in content.items()}


def _read_limited(source, name: str) -> bytes:
    return read_bounded(source, name, MAX_BODY_FILE_BYTES, missing=f"no body file {name!r}", empty=f"{name!r} is empty")


def camera_from_file(content: dict) -> Intrinsics | None:
    """Intrinsics from ``focal``/``principal_point`` or an OSX ``bbox``/``bbox_2``; None when absent."""
    if "focal" in content:
        focal = _finite(content["focal"], "focal").ravel()
        if focal.size not in (1, 2) or (focal <= 0).any():
            raise InputError("focal must be one or two positive numbers of pixels")
        fx, fy = (float(focal[0]), float(focal[-1]))
        if "principal_point" not in content:
            raise InputError("a body file with 'focal' also needs 'principal_point' (cx, cy) in pixels")
        cx, cy = (float(v) for v in _finite(content["principal_point"], "principal_point", (2,)))
        return Intrinsics(fx, fy, cx, cy)
    for key in ("bbox", "bbox_2"):
        if key in content:
            return Intrinsics.from_osx_bbox(content[key])
    return None


def _extrinsics(content: dict) -> tuple[np.ndarray, np.ndarray]:
    rotation = _finite(content["cam_R"], "cam_R", (3, 3)) if "cam_R" in content else np.eye(3)
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) < 0:
        raise InputError("cam_R must be a rotation matrix (orthonormal, determinant +1)")
    translation = _finite(content["cam_t"], "cam_t", (3,)) if "cam_t" in content else np.zeros(3)
    return rotation, translation


def body_from_content(content: dict, name: str, load_body_model) -> BodyInput:
    """A ``BodyInput`` from a body file's mapping. ``load_body_model(kind)`` returns a ``BodyModel``."""
    camera = camera_from_file(content)
    rotation, translation = _extrinsics(content)
    for key in ("vertices", "smpl_vertices"):
        if key in content:
            vertices = _finite(content[key], key)
            vertices = vertices[0] if vertices.ndim == 3 else vertices
            if vertices.ndim != 2 or vertices.shape[1] != 3:
                raise InputError(f"{key} must have shape (V, 3), got {vertices.shape}")
            topology = topology_of_count(len(vertices))
            faces = content.get("faces", content.get("smpl_faces"))
            if faces is None:
                faces = np.asarray(load_body_model(_kind_of_topology(topology)).faces.cpu())
            return BodyInput(vertices @ rotation.T + translation, np.asarray(faces, dtype=np.int64), topology,
                             f"posed body mesh ({name})", camera)
    missing = [key for key in PARAMETER_KEYS if key not in content]
    if missing:
        raise InputError(f"{name!r} lacks the keys {missing}; a body parameter file needs "
                         f"{', '.join(PARAMETER_KEYS)} (or 'vertices'); found {sorted(content)[:20]}")
    kind = str(np.asarray(content.get("model_type", "smplx"))).lower()
    if kind not in MODEL_TYPES:
        raise InputError(f"model_type must be one of {sorted(MODEL_TYPES)}, got {kind[:30]!r}")
    model = load_body_model(MODEL_TYPES[kind])
    params = {key: _finite(content[key], key).reshape(1, -1) for key in PARAMETER_KEYS}
    betas = params["betas"][:, :model.num_betas]
    params["betas"] = np.pad(betas, ((0, 0), (0, model.num_betas - betas.shape[1])))
    params["body_pose"] = params["body_pose"][:, :model.num_body_joints * 3]
    with torch.no_grad():
        output = model(**{key: torch.as_tensor(value, dtype=torch.float32) for key, value in params.items()})
    vertices = output.vertices[0].cpu().numpy().astype(np.float64)
    return BodyInput(vertices @ rotation.T + translation, np.asarray(model.faces.cpu()), model.topology,
                     f"body parameters ({name}, {kind})", camera)


def _kind_of_topology(topology: str) -> str:
    return {"openbody-v1": "openbody", "smplx-10475": "smplx", "smplh-6890": "smplh", "smpl-6890": "smpl"}[topology]


def load_body_file(source, name: str, load_body_model) -> BodyInput:
    """Body source 1 or 2: a parameter file or a posed mesh (see the module docstring)."""
    extension = PurePosixPath(str(name)).suffix.lower()
    if extension not in BODY_EXTENSIONS:
        raise InputError(f"{name!r}: unknown body file type {extension or '(none)'}; accepted: {ACCEPTED_BODY}")
    if extension in (".obj", ".ply"):
        import trimesh

        try:
            mesh = trimesh.load(io.BytesIO(_read_limited(source, name)), file_type=extension[1:], process=False,
                                force="mesh")
        except (ValueError, IndexError, KeyError, TypeError):
            raise InputError(f"{name!r} is not a readable {extension} mesh") from None
        if not hasattr(mesh, "faces") or len(mesh.faces) == 0:
            raise InputError(f"{name!r} has no faces; a posed body mesh needs its triangles")
        content = {"vertices": np.asarray(mesh.vertices), "faces": np.asarray(mesh.faces)}
        return body_from_content(content, name, load_body_model)
    return body_from_content(read_parameter_file(source, name), name, load_body_model)


# --- the object mask -----------------------------------------------------------------------------------


def check_mask(mask, image_size) -> np.ndarray:
    """(H, W) bool from a bool/uint8/float array (>= 0.5, or >= 128 for uint8) the size of the image."""
    array = np.asarray(mask)
    if array.ndim == 3:
        array = array[..., :3].max(-1) if array.shape[-1] in (3, 4) else array
    if array.ndim != 2:
        raise InputError(f"the object mask must be a single-channel image, got shape {array.shape}")
    height, width = image_size
    if array.shape != (height, width):
        raise InputError(f"the object mask is {array.shape[1]} x {array.shape[0]} pixels but the image is "
                         f"{width} x {height}; draw or upload the mask at the image's size")
    if array.dtype == np.uint8:
        binary = array >= 128
    elif array.dtype == bool:
        binary = array
    else:
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise InputError("the object mask contains NaN or inf")
        binary = values >= 0.5
    if not binary.any():
        raise InputError("the object mask is empty: mark the object's pixels (draw, a box for SAM, or a label)")
    return binary


def load_mask_file(source, image_size) -> np.ndarray:
    """A mask from a PNG/JPEG (any non-black pixel is the object) or an .npy array."""
    from PIL import Image, UnidentifiedImageError

    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    if bytes(data[:6]) == b"\x93NUMPY":
        try:
            return check_mask(np.load(io.BytesIO(data), allow_pickle=False), image_size)
        except ValueError:
            raise InputError("the mask .npy is not a plain array") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > 64_000_000:
                raise InputError("the mask image is too large")
            array = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError):
        raise InputError("the mask must be a PNG/JPEG image or an .npy array") from None
    return check_mask(array >= 128, image_size)


# --- contacts ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contacts:
    """Contact probabilities in [0, 1] on both meshes, and where each side came from.

    human: (V_body,) float32 on ``human_topology``.  object: (V_object,) float32 on the object's vertices.
    human_source / object_source: e.g. ``"interactvlm-joint"``, ``"painted"``, ``"baseline: category prior"``.
    """

    human: np.ndarray
    human_topology: str
    object: np.ndarray
    human_source: str
    object_source: str

    def __post_init__(self):
        for name in ("human", "object"):
            values = np.array(getattr(self, name), dtype=np.float32).ravel()
            if not np.isfinite(values).all():
                raise InputError(f"the {name} contacts contain NaN or inf")
            if values.size and (values.min() < 0 or values.max() > 1):
                raise InputError(f"the {name} contacts must be probabilities in [0, 1], got [{values.min()}, {values.max()}]")
            values.flags.writeable = False
            object.__setattr__(self, name, values)


def check_contacts(contacts: Contacts, body: BodyInput, object_vertex_count: int, *, human_threshold: float = 0.5,
                   object_threshold: float = 0.3) -> None:
    """Both sides on the right meshes, and enough contact on each to fit with."""
    if contacts.human_topology != body.topology or contacts.human.size != len(body.vertices):
        raise InputError(f"the human contacts are on {contacts.human_topology} ({contacts.human.size} values) but the "
                         f"body is {body.topology} ({len(body.vertices)} vertices); predict or paint them on this body")
    if contacts.object.size != object_vertex_count:
        raise InputError(f"the object contacts have {contacts.object.size} values but the object has "
                         f"{object_vertex_count} vertices; predict or paint them on this object")
    if not (contacts.human > human_threshold).any():
        raise InputError(f"no human contact above {human_threshold}: paint or predict where the body touches the object")
    if (contacts.object > object_threshold).sum() < 3:
        raise InputError(f"fewer than 3 object vertices have contact above {object_threshold}: paint or predict "
                         "where the object touches the body")


def load_contacts_file(source, *, human_topology: str, human_source: str = "uploaded file",
                       object_source: str = "uploaded file") -> Contacts:
    """An npz with ``human`` (or the release's ``pred_contact_3d_smplx``) and ``object`` (or ``pred_contact_3d``)."""
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError):
        raise InputError("the contacts file must be an npz of plain arrays ('human' and 'object')") from None
    human = next((arrays[k] for k in ("human", "pred_contact_3d_smplx", "probabilities") if k in arrays), None)
    obj = next((arrays[k] for k in ("object", "pred_contact_3d") if k in arrays), None)
    if human is None or obj is None:
        raise InputError(f"the contacts npz needs 'human' and 'object' arrays; found {sorted(arrays)[:10]}")
    topology = str(arrays["topology"]) if "topology" in arrays else human_topology
    return Contacts(np.asarray(human, dtype=np.float32).reshape(-1), topology, np.asarray(obj, dtype=np.float32).reshape(-1),
                    human_source, object_source)


def body_from_keypoints(image: np.ndarray, estimator, body_model, *, person_box=None, progress=None) -> BodyInput:
    """Body source 3: ViTPose keypoints (``engine.fitting.vitpose``) and the keypoint fit (``engine.fitting.fit``).

    The fitting core works in the Y-up world of ``photo_camera`` (camera at the origin looking along -Z,
    ``R = diag(1, -1, -1)``): the body's OpenCV camera-frame vertices are ``x @ diag(1, -1, -1)``.
    """
    from engine.fitting.fit import fit_body, photo_camera

    size = tuple(image.shape[:2])
    keypoints = estimator(image, box=person_box)
    camera = photo_camera(size)
    fitted = fit_body(body_model, keypoints, camera, progress=progress)
    K = camera.K[0].numpy()
    return BodyInput(np.asarray(fitted.vertices, dtype=np.float64) * np.array([1.0, -1.0, -1.0]),
                     np.asarray(body_model.faces.cpu()), fitted.topology,
                     f"fitted from ViTPose keypoints ({fitted.prior} prior)",
                     Intrinsics(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])))
