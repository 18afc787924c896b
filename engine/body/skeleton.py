"""The 22-joint body skeleton shared by SMPL-X, SMPL-H and the open body (names and order of SMPL-X)."""
from __future__ import annotations

import math

import torch

BODY_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)
BODY_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19,
)
NUM_BODY_JOINTS = len(BODY_JOINT_NAMES) - 1  # joints driven by body_pose (the pelvis takes global_orient)

VITRUVIAN_HIP_DEGREES = 30.0


def vitruvian_body_pose(num_body_joints: int = NUM_BODY_JOINTS, dtype=torch.float32) -> torch.Tensor:
    """(1, num_body_joints * 3) axis-angle pose used by InteractVLM's canonical renders.

    Every joint is zero except the left hip (+30 deg about z) and the right hip (-30 deg about z),
    which spreads the legs; the arms stay in the T-pose.
    """
    pose = torch.zeros(1, num_body_joints, 3, dtype=dtype)
    angle = math.radians(VITRUVIAN_HIP_DEGREES)
    pose[0, BODY_JOINT_NAMES.index("left_hip") - 1, 2] = angle
    pose[0, BODY_JOINT_NAMES.index("right_hip") - 1, 2] = -angle
    return pose.reshape(1, -1)
