"""Keypoints of a known posed body seen by known cameras: the ground truth of the fitting tests and benchmark."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.body.model import BodyModel
from engine.body.skeleton import BODY_JOINT_NAMES
from engine.fitting.keypoints import Keypoints2D, keypoint_sites
from engine.fitting.kinematics import SiteModel
from engine.render.cameras import FoVPerspectiveCamera, OpenCVCamera

# A walking step while reaching forward with the left hand (axis-angle, radians, per joint).
WALK_AND_REACH = {
    "left_shoulder": (0.0, -0.5, -1.0), "right_shoulder": (0.0, 0.3, 1.2),
    "left_elbow": (0.0, -0.9, 0.0), "right_elbow": (0.0, 0.3, 0.0),
    "left_hip": (-0.45, 0.0, 0.05), "right_hip": (0.25, 0.0, -0.05),
    "left_knee": (0.35, 0.0, 0.0), "right_knee": (0.7, 0.0, 0.0),
    "spine2": (0.1, 0.1, 0.0), "neck": (0.15, -0.2, 0.0),
}


def body_pose_from(joints: dict[str, tuple[float, float, float]], num_body_joints: int = 21) -> torch.Tensor:
    """(1, num_body_joints * 3) axis-angle with the named joints set and every other joint at rest."""
    pose = torch.zeros(1, num_body_joints, 3)
    for name, value in joints.items():
        pose[0, BODY_JOINT_NAMES.index(name) - 1] = torch.tensor(value)
    return pose.reshape(1, -1)


def orbit_cameras(azimuths_deg, image_size=(512, 512), distance=3.5, elevation_deg=10.0, fov=50.0) -> OpenCVCamera:
    """OpenCV cameras on a circle around the origin, looking at it (pytorch3d look-at, then converted)."""
    count = len(azimuths_deg)
    fov_camera = FoVPerspectiveCamera.look_at([distance] * count, [elevation_deg] * count, list(azimuths_deg), fov=fov)
    return fov_camera.to_opencv(image_size)


@dataclass(frozen=True)
class SyntheticViews:
    """keypoints: one Keypoints2D per camera (noisy).  joints: (22, 3) true joints.  clean: (N, K, 2) true pixels."""

    keypoints: tuple[Keypoints2D, ...]
    joints: np.ndarray
    clean: np.ndarray


def synthetic_views(body: BodyModel, cameras: OpenCVCamera, body_pose: torch.Tensor, global_orient=(0.0, 0.0, 0.0),
                    transl=(0.0, 0.0, 0.0), noise_px: float = 2.0, seed: int = 0, layout: str = "body22",
                    image_size=(512, 512)) -> SyntheticViews:
    """Project the body's keypoint sites into every camera and add Gaussian pixel noise (sigma ``noise_px``)."""
    rest = body.v_template.detach().cpu().numpy()
    sites = keypoint_sites(layout, body.topology, rest)
    with torch.no_grad():
        vertex_ids = torch.as_tensor(sites.vertex_ids)
        as_row = lambda value: torch.as_tensor(value, dtype=torch.float32).reshape(1, -1)
        joints, vertices = SiteModel.build(body, vertex_ids)(torch.zeros(1, body.num_betas), body_pose,
                                                             as_row(global_orient), as_row(transl))
        points = sites.gather(joints[0], vertices[0])
        clean = cameras.project(points)[..., :2]
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed)) * noise_px
    keypoints = tuple(Keypoints2D(xy=(clean[v] + noise[v]).numpy(), confidence=np.ones(len(points), np.float32),
                                  image_size=image_size, layout=layout) for v in range(len(cameras)))
    return SyntheticViews(keypoints=keypoints, joints=joints[0].numpy(), clean=clean.numpy())
