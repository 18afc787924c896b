"""2D keypoints and where they sit on our bodies.

``Keypoints2D`` is what ViTPose (``engine.fitting.vitpose``) returns and what the fitter consumes.
Two layouts are accepted:

``coco17``   ViTPose / COCO order (below).
``coco23``   COCO-17 then COCO-WholeBody's 6 foot keypoints (its keypoints 17-22: left big toe, left
             small toe, left heel, right big toe, right small toe, right heel), from a whole-body
             (133-keypoint) ViTPose. The big toes sit on the ``left_foot`` / ``right_foot`` joints
             (SMPL-X's foot joints, which GenZI fits to the big toes); small toes and heels have no
             site on our bodies and weigh 0 in a fit.
``body22``   the 22 body joints of ``engine.body.skeleton`` (SMPL-X body order), e.g. from synthetic
             data or another fitter.

COCO-17 to our bodies (``COCO17_SITES``). Body joint indices are the same for ``openbody-v1``,
SMPL-X, SMPL-H and SMPL (their first 22 joints share names and order); face keypoints have no joint
and sit on a vertex instead (SMPL-family ids from ``smplx.vertex_ids``; on the open body the vertex
nearest to the listed rest position).

====  ===============  ====================================  ============================================
 #    COCO keypoint    body joint (index)                    vertex: SMPL-X / SMPL(-H) / open body rest xyz
====  ===============  ====================================  ============================================
 0    nose             --                                    9120 / 332  / (0.000, 0.430, 0.120)
 1    left_eye         --                                    9448 / 2800 / (0.032, 0.465, 0.095)
 2    right_eye        --                                    9929 / 6260 / (-0.032, 0.465, 0.095)
 3    left_ear         --                                    6    / 583  / (0.080, 0.445, 0.005)
 4    right_ear        --                                    616  / 4071 / (-0.080, 0.445, 0.005)
 5    left_shoulder    left_shoulder (16)
 6    right_shoulder   right_shoulder (17)
 7    left_elbow       left_elbow (18)
 8    right_elbow      right_elbow (19)
 9    left_wrist       left_wrist (20)
10    right_wrist      right_wrist (21)
11    left_hip         left_hip (1)
12    right_hip        right_hip (2)
13    left_knee        left_knee (4)
14    right_knee       right_knee (5)
15    left_ankle       left_ankle (7)
16    right_ankle      right_ankle (8)
====  ===============  ====================================  ============================================

Known bias: COCO's hip keypoints sit higher and wider than the skinned hip joints (as in SMPLify);
``coco17`` fits on real photos therefore weight the hips by ``COCO17_HIP_WEIGHT``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from engine.body.skeleton import BODY_JOINT_NAMES
from engine.errors import InputError

COCO17_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
COCO17_HIP_WEIGHT = 0.5
FOOT_NAMES: tuple[str, ...] = ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe",
                               "right_heel")  # COCO-WholeBody keypoints 17-22
COCO23_NAMES: tuple[str, ...] = COCO17_NAMES + FOOT_NAMES
BIG_TOE_JOINTS = {"left_big_toe": "left_foot", "right_big_toe": "right_foot"}
LAYOUTS = ("coco17", "coco23", "body22")
_LAYOUT_NAMES = {"coco17": COCO17_NAMES, "coco23": COCO23_NAMES, "body22": BODY_JOINT_NAMES}

# name -> {topology-or-family: vertex id} or a rest position on the open body
_FACE_VERTICES = {
    "nose": {"smplx-10475": 9120, "smplh-6890": 332, "smpl-6890": 332, "openbody-v1": (0.0, 0.43, 0.12)},
    "left_eye": {"smplx-10475": 9448, "smplh-6890": 2800, "smpl-6890": 2800, "openbody-v1": (0.032, 0.465, 0.095)},
    "right_eye": {"smplx-10475": 9929, "smplh-6890": 6260, "smpl-6890": 6260, "openbody-v1": (-0.032, 0.465, 0.095)},
    "left_ear": {"smplx-10475": 6, "smplh-6890": 583, "smpl-6890": 583, "openbody-v1": (0.08, 0.445, 0.005)},
    "right_ear": {"smplx-10475": 616, "smplh-6890": 4071, "smpl-6890": 4071, "openbody-v1": (-0.08, 0.445, 0.005)},
}


@dataclass(frozen=True)
class Keypoints2D:
    """2D keypoints of one person in one image.

    xy: (K, 2) float32 pixels, (column, row), pixel centres at integers (OpenCV).
    confidence: (K,) float32 in [0, 1]; 0 marks a keypoint to ignore.
    image_size: (height, width) of the image the pixels refer to.
    layout: ``coco17`` (K = 17), ``coco23`` (K = 23) or ``body22`` (K = 22).
    box: (x0, y0, x1, y1) person box the keypoints were estimated in, or None.
    """

    xy: np.ndarray
    confidence: np.ndarray
    image_size: tuple[int, int]
    layout: str = "coco17"
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self):
        check_keypoints(self.xy, self.confidence, self.layout)
        size = tuple(np.asarray(self.image_size).reshape(-1).tolist())
        if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
            raise InputError(f"image_size must be (height, width) in whole pixels, got {self.image_size!r}")
        object.__setattr__(self, "xy", np.asarray(self.xy, dtype=np.float32))
        object.__setattr__(self, "confidence", np.asarray(self.confidence, dtype=np.float32))
        object.__setattr__(self, "image_size", size)

    @property
    def names(self) -> tuple[str, ...]:
        return _LAYOUT_NAMES[self.layout]


def layout_size(layout: str) -> int:
    if layout not in LAYOUTS:
        raise InputError(f"unknown keypoint layout {layout!r}; accepted: {', '.join(LAYOUTS)}")
    return len(_LAYOUT_NAMES[layout])


def check_keypoints(xy, confidence, layout: str) -> None:
    """InputError unless ``xy`` is finite (K, 2) and ``confidence`` finite (K,) in [0, 1] for the layout."""
    count = layout_size(layout)
    xy, confidence = np.asarray(xy), np.asarray(confidence)
    if xy.shape != (count, 2):
        raise InputError(f"{layout} keypoints must have shape ({count}, 2), got {xy.shape}")
    if confidence.shape != (count,):
        raise InputError(f"{layout} confidences must have shape ({count},), got {confidence.shape}")
    if not np.isfinite(xy).all():
        bad = [int(i) for i in np.nonzero(~np.isfinite(xy).all(1))[0]]
        raise InputError(f"keypoints {bad} are NaN or infinite; give confidence 0 and any finite position instead")
    if not np.isfinite(confidence).all() or confidence.min() < 0 or confidence.max() > 1:
        raise InputError("keypoint confidences must be finite and within [0, 1]")
    if confidence.max() <= 0:
        raise InputError("every keypoint has confidence 0; nothing to fit")


@dataclass(frozen=True)
class KeypointSites:
    """Where each keypoint of a layout sits on one body: a joint or a vertex, never both.

    joint: (K,) int64 body joint index or -1.  vertex: (K,) int64 vertex id or -1.
    weight: (K,) float32 per-keypoint weight multiplied into the confidences.
    """

    layout: str
    topology: str
    joint: np.ndarray
    vertex: np.ndarray
    weight: np.ndarray

    @property
    def vertex_ids(self) -> np.ndarray:
        """The distinct vertex ids used (sorted)."""
        return np.unique(self.vertex[self.vertex >= 0])

    @functools.cached_property
    def _site_slots(self) -> np.ndarray:
        """(K,) each keypoint's row in ``vertex_ids`` (-1 for keypoints on joints); computed once."""
        return np.where(self.vertex >= 0, np.searchsorted(self.vertex_ids, self.vertex), -1)

    def gather(self, joints: torch.Tensor, site_vertices: torch.Tensor) -> torch.Tensor:
        """(..., J, 3) joints and (..., len(vertex_ids), 3) vertices to (..., K, 3) keypoints (one indexing)."""
        index = np.where(self.joint >= 0, self.joint, joints.shape[-2] + self._site_slots)
        points = torch.cat([joints, site_vertices], dim=-2)
        return points.index_select(-2, torch.as_tensor(index, device=points.device))


def _face_vertex(name: str, topology: str, rest_vertices: np.ndarray | None) -> int:
    entry = _FACE_VERTICES[name].get(topology)
    if entry is None:
        raise InputError(f"no {name} vertex is known for the {topology} body; use the body22 layout")
    if isinstance(entry, int):
        return entry
    if rest_vertices is None:
        raise InputError(f"the {topology} body needs its rest vertices to place the {name} keypoint")
    return int(np.argmin(np.linalg.norm(np.asarray(rest_vertices) - np.asarray(entry), axis=1)))


def keypoint_sites(layout: str, topology: str, rest_vertices: np.ndarray | None = None,
                   hip_weight: float = COCO17_HIP_WEIGHT) -> KeypointSites:
    """The sites of ``layout`` on a body of ``topology`` (rest_vertices: (V, 3) T-pose, for the open body)."""
    count = layout_size(layout)
    joint, vertex, weight = np.full(count, -1), np.full(count, -1), np.ones(count, dtype=np.float32)
    if layout == "body22":
        joint[:] = np.arange(count)
    else:
        for index, name in enumerate(_LAYOUT_NAMES[layout]):
            if name in _FACE_VERTICES:
                vertex[index] = _face_vertex(name, topology, rest_vertices)
            elif name in FOOT_NAMES:  # big toes on the foot joints; small toes and heels: no site, weight 0
                joint[index] = BODY_JOINT_NAMES.index(BIG_TOE_JOINTS.get(name, name.split("_")[0] + "_foot"))
                weight[index] = 1.0 if name in BIG_TOE_JOINTS else 0.0
            else:
                joint[index] = BODY_JOINT_NAMES.index(name)
                weight[index] = hip_weight if name.endswith("_hip") else 1.0
    return KeypointSites(layout, topology, joint.astype(np.int64), vertex.astype(np.int64), weight)
