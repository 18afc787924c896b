"""Joints and a few chosen vertices of a body, without skinning the whole mesh.

Keypoint fitting only needs the 22 joints and a handful of face vertices per iteration; skinning all
vertices every step (and, for SMPL, regressing joints from all shaped vertices) would dominate the
fit time. ``SiteModel`` precomputes what depends only on the body (joint shape directions, the chosen
vertices' templates, blend shapes, pose correctives and weights) and reproduces ``BodyModel.forward``
exactly on them (a test checks it) for the open body and for the SMPL family.

Per call it does as few tensor operations as it can, since an optimiser runs it thousands of times
on small tensors (where each operation's fixed cost dominates, on the CPU and in kernel launches on
a GPU):
    * shape blend shapes are one matrix product with the directions flattened to (3 P, S);
    * forward kinematics runs one tree level at a time (every joint of a level at once: 8 steps for the
      22 body joints, 11 for SMPL-X's 55) instead of one joint at a time;
    * skinning blends only the 12 useful entries of each joint's 4 x 4 transform (one (P, J) x (J, 12)
      product) and applies each site's 3 x 4 transform in one batched product, so no (P, 4, 4) tensor is built.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from smplx.lbs import batch_rodrigues

from engine.body.model import BodyModel, OpenBody, SmplFamilyBody
from engine.body.skeleton import BODY_JOINT_NAMES


@dataclass(frozen=True)
class TreeLevels:
    """A kinematic tree grouped by depth, for ``forward_kinematics``.

    steps: per level >= 1, (joint ids, parent slots in the previous level's ids, parent joint ids).
    inverse: (J,) the permutation from the level order back to joint order.
    """

    steps: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]
    inverse: torch.Tensor

    @classmethod
    def build(cls, parents, device=None) -> "TreeLevels":
        parents = [int(p) for p in parents]
        depth = [0] * len(parents)
        for joint, parent in enumerate(parents):
            if parent >= joint:
                raise ValueError("the kinematic tree must list every parent before its children")
            if parent >= 0:
                depth[joint] = depth[parent] + 1
        by_level = [[j for j in range(len(parents)) if depth[j] == level] for level in range(max(depth) + 1)]
        as_ids = lambda values: torch.tensor(values, dtype=torch.long, device=device)
        steps = tuple((as_ids(current), as_ids([previous.index(parents[j]) for j in current]),
                       as_ids([parents[j] for j in current]))
                      for previous, current in zip(by_level, by_level[1:]))
        order = [j for level in by_level for j in level]
        return cls(steps, torch.argsort(as_ids(order)))


def forward_kinematics(rotations: torch.Tensor, joints: torch.Tensor,
                       tree: TreeLevels) -> tuple[torch.Tensor, torch.Tensor]:
    """World rotations (B, J, 3, 3) and positions (B, J, 3) of the joints, from local ``rotations``
    (B, J, 3, 3) about the rest ``joints`` (B, J, 3) with the root at rest (what ``smplx.lbs``'s
    ``batch_rigid_transform`` computes, one tree level at a time instead of one joint at a time)."""
    level_rotations, level_positions = [rotations[:, :1]], [joints[:, :1]]
    for ids, parent_slots, parent_ids in tree.steps:
        parent_rotation = level_rotations[-1][:, parent_slots]
        bones = joints[:, ids] - joints[:, parent_ids]
        level_positions.append((parent_rotation @ bones[..., None])[..., 0] + level_positions[-1][:, parent_slots])
        level_rotations.append(parent_rotation @ rotations[:, ids])
    return torch.cat(level_rotations, 1)[:, tree.inverse], torch.cat(level_positions, 1)[:, tree.inverse]


@dataclass(frozen=True)
class SiteModel:
    """A body reduced to its joints and ``vertex_ids``.

    rest_joints: (J, 3).  joint_shape_dirs: (3 J, S) flattened.  rest_sites: (P, 3).  site_shape_dirs:
    (3 P, S) flattened.  site_pose_dirs: (9 (J - 1), 3 P) pose correctives or None (open body).
    site_weights: (P, J).  tree: the kinematic tree by levels.
    """

    body: BodyModel
    rest_joints: torch.Tensor
    joint_shape_dirs: torch.Tensor
    rest_sites: torch.Tensor
    site_shape_dirs: torch.Tensor
    site_pose_dirs: torch.Tensor | None
    site_weights: torch.Tensor
    tree: TreeLevels

    @classmethod
    def build(cls, body: BodyModel, vertex_ids: torch.Tensor) -> "SiteModel":
        ids = torch.as_tensor(vertex_ids, dtype=torch.long, device=body.device)
        tree = TreeLevels.build(body.parent_index.tolist(), body.device)
        flat = lambda dirs: dirs.reshape(-1, dirs.shape[-1]).contiguous()
        if isinstance(body, OpenBody):
            return cls(body, body.joints, flat(body.joint_shape_dirs), body.v_template[ids], flat(body.shape_dirs[ids]),
                       None, body.weights[ids], tree)
        if isinstance(body, SmplFamilyBody):
            regressor = body.J_regressor
            columns = (ids[:, None] * 3 + torch.arange(3, device=ids.device)).reshape(-1)
            return cls(body, regressor @ body.v_template, flat(torch.einsum("jv,vcs->jcs", regressor, body.shapedirs)),
                       body.v_template[ids], flat(body.shapedirs[ids]), body.posedirs[:, columns].contiguous(),
                       body.lbs_weights[ids], tree)
        raise TypeError(f"no joints-only path for {type(body).__name__}")

    def __call__(self, betas: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor,
                 transl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 22, 3) posed body joints and (B, P, 3) posed sites, from ``BodyModel.forward``'s (B, ...) arguments."""
        body = self.body
        batch = body_pose.shape[0]
        hidden = body_pose.new_zeros(batch, 3 * (body.num_pose_joints - 1 - body.num_body_joints))
        full_pose = torch.cat([global_orient, body_pose, hidden], dim=1)
        rotations = batch_rodrigues(full_pose.reshape(-1, 3)).view(batch, -1, 3, 3)
        joints = self.rest_joints + (betas @ self.joint_shape_dirs.T).view(batch, -1, 3)
        sites = self.rest_sites + (betas @ self.site_shape_dirs.T).view(batch, -1, 3)
        if self.site_pose_dirs is not None:
            eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
            sites = sites + ((rotations[:, 1:] - eye).reshape(batch, -1) @ self.site_pose_dirs).view(batch, -1, 3)
        world_rotations, posed_joints = forward_kinematics(rotations, joints, self.tree)
        # joint transforms as 3 x 4 [R | p - R j], blended per site by the skinning weights
        shifts = posed_joints - (world_rotations @ joints[..., None])[..., 0]
        blended = self.site_weights @ torch.cat([world_rotations.reshape(batch, -1, 9), shifts], dim=2)  # (B, P, 12)
        count = sites.shape[1]
        rotated = torch.bmm(blended[..., :9].reshape(batch * count, 3, 3), sites.reshape(batch * count, 3, 1))
        sites = rotated.view(batch, count, 3) + blended[..., 9:]
        offset = transl[:, None]
        return posed_joints[:, : len(BODY_JOINT_NAMES)] + offset, sites + offset


def sites_forward(body: BodyModel, betas: torch.Tensor, body_pose: torch.Tensor, global_orient: torch.Tensor,
                  transl: torch.Tensor, vertex_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-off ``SiteModel.build(body, vertex_ids)(betas, body_pose, global_orient, transl)``."""
    return SiteModel.build(body, vertex_ids)(betas, body_pose, global_orient, transl)
