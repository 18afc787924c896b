"""Per-vertex body-part labels: from a user's segmentation file, or from the dominant skinning joint.

Segmentation file format (JSON, at ``<models>/body/parts/<topology>.json``):
    ``{"part name": [vertex id, ...], ...}``. Ids must be in range; a vertex listed under two parts
    keeps the first; vertices listed nowhere take the part of their dominant skinning joint.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.body.skeleton import BODY_JOINT_NAMES
from engine.errors import InputError

DEFAULT_PART_NAMES: tuple[str, ...] = (
    "head", "neck", "chest", "upper_back", "abdomen", "lower_back", "hips",
    "left_upper_arm", "right_upper_arm", "left_forearm", "right_forearm", "left_hand", "right_hand",
    "left_thigh", "right_thigh", "left_shin", "right_shin", "left_foot", "right_foot",
)
_SINGLE_PART = {
    "pelvis": "hips", "neck": "neck", "head": "head", "hip": "thigh", "knee": "shin", "ankle": "foot",
    "foot": "foot", "shoulder": "upper_arm", "elbow": "forearm", "wrist": "hand",
}
_FRONT_BACK = {"spine1": ("abdomen", "lower_back"), "spine2": ("abdomen", "lower_back"),
               "spine3": ("chest", "upper_back"), "collar": ("chest", "upper_back")}
MAX_SEGMENTATION_BYTES = 16 * 1024 ** 2


def side_and_kind(joint_name: str) -> tuple[str, str]:
    for side in ("left_", "right_"):
        if joint_name.startswith(side):
            return side, joint_name[len(side):]
    return "", joint_name


def parts_from_dominant_joint(dominant: np.ndarray, vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Label each vertex by its dominant body joint (0..21); torso joints split front/back at the joint's z."""
    labels = np.empty(len(dominant), dtype=np.int64)
    for index, name in enumerate(BODY_JOINT_NAMES):
        mask = dominant == index
        side, kind = side_and_kind(name)
        if kind in _FRONT_BACK:
            front = vertices[:, 2] >= joints[index, 2]
            front_part, back_part = _FRONT_BACK[kind]
            labels[mask & front] = DEFAULT_PART_NAMES.index(front_part)
            labels[mask & ~front] = DEFAULT_PART_NAMES.index(back_part)
        else:
            labels[mask] = DEFAULT_PART_NAMES.index(side + _SINGLE_PART[kind])
    return labels


def body_ancestor(parents: np.ndarray) -> np.ndarray:
    """For every joint of a full skeleton, the nearest of the 22 body joints on its path to the root."""
    ancestor = np.arange(len(parents))
    for joint in range(len(parents)):
        node = joint
        while node >= len(BODY_JOINT_NAMES):
            node = int(parents[node])
        ancestor[joint] = node
    return ancestor


def read_segmentation(path: Path, num_vertices: int, fallback: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels (V,) and part names from a segmentation JSON; ``fallback`` names come from DEFAULT_PART_NAMES."""
    if path.stat().st_size > MAX_SEGMENTATION_BYTES:
        raise InputError(f"{path} is larger than {MAX_SEGMENTATION_BYTES} bytes")
    try:
        parts = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(parts, dict) or not parts:
        raise InputError(f"{path} must be a JSON object mapping part names to vertex id lists")
    names = list(parts)
    labels = np.full(num_vertices, -1, dtype=np.int64)
    for index in reversed(range(len(names))):  # reversed so the first listing wins
        ids = np.asarray(parts[names[index]])
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise InputError(f"{path}: part {names[index]!r} must list integer vertex ids")
        if ids.size and (ids.min() < 0 or ids.max() >= num_vertices):
            raise InputError(f"{path}: part {names[index]!r} has ids outside 0..{num_vertices - 1}")
        labels[ids] = index
    unlabelled = labels < 0
    if unlabelled.any():
        extra = [DEFAULT_PART_NAMES[i] for i in np.unique(fallback[unlabelled])]
        for name in extra:
            if name not in names:
                names.append(name)
        labels[unlabelled] = [names.index(DEFAULT_PART_NAMES[i]) for i in fallback[unlabelled]]
    return labels, tuple(names)
