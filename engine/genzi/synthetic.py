"""A known body sitting on the built-in sofa, seen by GenZI's selected views: the ground truth of the
lifting recovery test and of the lifting benchmark."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.body.model import BodyModel
from engine.fitting.keypoints import Keypoints2D
from engine.fitting.synthetic import body_pose_from, synthetic_views
from engine.genzi import views
from engine.genzi.scenes import builtin_scene
from engine.genzi.sdf import SceneSDF

SITTING = {"left_hip": (-1.5, 0.0, 0.0), "right_hip": (-1.5, 0.0, 0.0), "left_knee": (1.45, 0.0, 0.0),
           "right_knee": (1.45, 0.0, 0.0), "left_shoulder": (0.0, 0.0, -1.1), "right_shoulder": (0.0, 0.0, 1.1),
           "left_elbow": (0.0, -0.6, 0.0), "right_elbow": (0.0, 0.6, 0.0)}
SEAT_POINT = (0.0, 0.45, -1.35)
PELVIS_XZ = (0.0, -1.3)
WRONG_VIEWS = (3, 7, 11, 15)
CONTACT_GAP = 0.003  # metres between the lowest vertex and the seat


@dataclass(frozen=True)
class SofaCase:
    """keypoints: one body22 Keypoints2D per selected view (the WRONG_VIEWS show another person).
    cameras: OpenCV cameras of the views.  joints: (22, 3) true joints.  transl: (3,) true translation."""

    selection: views.ViewSelection
    cameras: object
    keypoints: tuple[Keypoints2D, ...]
    joints: np.ndarray
    transl: np.ndarray
    wrong: tuple[int, ...]


def seated_translation(body: BodyModel, sdf: SceneSDF, body_pose: torch.Tensor) -> np.ndarray:
    """The translation that puts the posed body CONTACT_GAP above the seat (bisection on the height)."""
    with torch.no_grad():
        posed = body(body_pose=body_pose).vertices[0]
    low, high = 0.0, 2.0
    for _ in range(30):
        middle = (low + high) / 2
        offset = torch.tensor([PELVIS_XZ[0], middle, PELVIS_XZ[1]], dtype=posed.dtype)
        low, high = (low, middle) if float(sdf(posed + offset).min()) > CONTACT_GAP else (middle, high)
    return np.array([PELVIS_XZ[0], high, PELVIS_XZ[1]])


def sofa_case(body: BodyModel, sdf: SceneSDF, noise_px: float = 2.0, wrong=WRONG_VIEWS) -> SofaCase:
    selection = views.select_views(builtin_scene("living_room"), SEAT_POINT)
    cameras = selection.cameras.to_opencv((views.IMAGE_SIZE, views.IMAGE_SIZE))
    pose = body_pose_from(SITTING)
    transl = seated_translation(body, sdf, pose)
    truth = synthetic_views(body, cameras, pose, transl=transl, noise_px=noise_px, seed=0)
    # The wrong views show someone else: arms up, turned 90 degrees, half a metre away.
    other = synthetic_views(body, cameras, body_pose_from({"left_shoulder": (0, 0, 1.2), "right_shoulder": (0, 0, -1.2)}),
                            global_orient=(0.0, 1.6, 0.0), transl=transl + (0.3, 0.4, 0.3), noise_px=noise_px, seed=1)
    keypoints = tuple(other.keypoints[i] if i in wrong else truth.keypoints[i] for i in range(len(cameras)))
    return SofaCase(selection, cameras, keypoints, truth.joints, transl, tuple(wrong))
