"""Joints and a few chosen vertices of a body, without skinning the whole mesh.

Keypoint fitting only needs the 22 joints and a handful of face vertices per iteration; skinning all
10k vertices every step would dominate the fit time. ``sites_forward`` reproduces
``BodyModel.forward`` exactly (a test checks it) for the open body and for the SMPL family.
"""
from __future__ import annotations

import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues, blend_shapes, vertices2joints

from engine.body.model import BodyModel, OpenBody, SmplFamilyBody
from engine.body.skeleton import BODY_JOINT_NAMES


def _full_pose(body: BodyModel, body_pose: torch.Tensor, global_orient: torch.Tensor) -> torch.Tensor:
    batch = body_pose.shape[0]
    hidden = body_pose.new_zeros(batch, 3 * (body.num_pose_joints - 1 - body.num_body_joints))
    return torch.cat([global_orient, body_pose, hidden], dim=1)


def _skin_subset(transforms: torch.Tensor, weights: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    per_vertex = torch.einsum("vj,bjkl->bvkl", weights, transforms)
    return torch.einsum("bvkl,bvl->bvk", per_vertex[..., :3, :3], points) + per_vertex[..., :3, 3]


def sites_forward(body: BodyModel, betas: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor,
                  transl: torch.Tensor, vertex_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 22, 3) posed body joints and (B, S, 3) posed vertices ``vertex_ids`` (S may be 0).

    Arguments are batched (B, ...) exactly as ``BodyModel.forward`` takes them (axis-angle poses).
    """
    full_pose = _full_pose(body, body_pose, global_orient)
    batch = full_pose.shape[0]
    rotations = batch_rodrigues(full_pose.reshape(-1, 3)).view(batch, -1, 3, 3)
    if isinstance(body, OpenBody):
        rest_joints = body.joints + torch.einsum("jcs,bs->bjc", body.joint_shape_dirs, betas)
        shaped = body.v_template[vertex_ids] + torch.einsum("vcs,bs->bvc", body.shape_dirs[vertex_ids], betas)
        weights = body.weights[vertex_ids]
    elif isinstance(body, SmplFamilyBody):
        rest_joints = vertices2joints(body.J_regressor, body.v_template + blend_shapes(betas, body.shapedirs))
        shaped = body.v_template[vertex_ids] + blend_shapes(betas, body.shapedirs[vertex_ids])
        eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
        pose_feature = (rotations[:, 1:] - eye).reshape(batch, -1)
        columns = (vertex_ids[:, None] * 3 + torch.arange(3, device=vertex_ids.device)).reshape(-1)
        shaped = shaped + (pose_feature @ body.posedirs[:, columns]).view(batch, -1, 3)
        weights = body.lbs_weights[vertex_ids]
    else:
        raise TypeError(f"no fast path for {type(body).__name__}")
    posed_joints, transforms = batch_rigid_transform(rotations, rest_joints, body.parent_index, dtype=betas.dtype)
    offset = transl[:, None]
    vertices = _skin_subset(transforms, weights, shaped) + offset
    return posed_joints[:, : len(BODY_JOINT_NAMES)] + offset, vertices
