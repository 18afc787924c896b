"""Joints and a few chosen vertices of a body, without skinning the whole mesh.

Keypoint fitting only needs the 22 joints and a handful of face vertices per iteration; skinning all
vertices every step (and, for SMPL, regressing joints from all shaped vertices) would dominate the
fit time. ``SiteModel`` precomputes what depends only on the body (joint shape directions, the chosen
vertices' templates, blend shapes, pose correctives and weights) and reproduces ``BodyModel.forward``
exactly on them (a test checks it) for the open body and for the SMPL family.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues

from engine.body.model import BodyModel, OpenBody, SmplFamilyBody
from engine.body.skeleton import BODY_JOINT_NAMES


@dataclass(frozen=True)
class SiteModel:
    """A body reduced to its joints and ``vertex_ids``.

    rest_joints: (J, 3).  joint_shape_dirs: (J, 3, S).  rest_sites: (P, 3).  site_shape_dirs: (P, 3, S).
    site_pose_dirs: (9 (J - 1), P * 3) pose correctives or None (open body).  site_weights: (P, J).
    """

    body: BodyModel
    rest_joints: torch.Tensor
    joint_shape_dirs: torch.Tensor
    rest_sites: torch.Tensor
    site_shape_dirs: torch.Tensor
    site_pose_dirs: torch.Tensor | None
    site_weights: torch.Tensor

    @classmethod
    def build(cls, body: BodyModel, vertex_ids: torch.Tensor) -> "SiteModel":
        ids = torch.as_tensor(vertex_ids, dtype=torch.long, device=body.device)
        if isinstance(body, OpenBody):
            return cls(body, body.joints, body.joint_shape_dirs, body.v_template[ids], body.shape_dirs[ids], None,
                       body.weights[ids])
        if isinstance(body, SmplFamilyBody):
            regressor = body.J_regressor
            columns = (ids[:, None] * 3 + torch.arange(3, device=ids.device)).reshape(-1)
            return cls(body, regressor @ body.v_template, torch.einsum("jv,vcs->jcs", regressor, body.shapedirs),
                       body.v_template[ids], body.shapedirs[ids], body.posedirs[:, columns], body.lbs_weights[ids])
        raise TypeError(f"no joints-only path for {type(body).__name__}")

    def __call__(self, betas: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor,
                 transl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 22, 3) posed body joints and (B, P, 3) posed sites, from ``BodyModel.forward``'s (B, ...) arguments."""
        body = self.body
        batch = body_pose.shape[0]
        hidden = body_pose.new_zeros(batch, 3 * (body.num_pose_joints - 1 - body.num_body_joints))
        full_pose = torch.cat([global_orient, body_pose, hidden], dim=1)
        rotations = batch_rodrigues(full_pose.reshape(-1, 3)).view(batch, -1, 3, 3)
        joints = self.rest_joints + torch.einsum("jcs,bs->bjc", self.joint_shape_dirs, betas)
        sites = self.rest_sites + torch.einsum("vcs,bs->bvc", self.site_shape_dirs, betas)
        if self.site_pose_dirs is not None:
            eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
            sites = sites + ((rotations[:, 1:] - eye).reshape(batch, -1) @ self.site_pose_dirs).view(batch, -1, 3)
        posed_joints, transforms = batch_rigid_transform(rotations, joints, body.parent_index, dtype=betas.dtype)
        per_site = torch.einsum("vj,bjkl->bvkl", self.site_weights, transforms)
        sites = torch.einsum("bvkl,bvl->bvk", per_site[..., :3, :3], sites) + per_site[..., :3, 3]
        offset = transl[:, None]
        return posed_joints[:, : len(BODY_JOINT_NAMES)] + offset, sites + offset


def sites_forward(body: BodyModel, betas: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor,
                  transl: torch.Tensor, vertex_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-off ``SiteModel.build(body, vertex_ids)(betas, body_pose, global_orient, transl)``."""
    return SiteModel.build(body, vertex_ids)(betas, body_pose, global_orient, transl)
