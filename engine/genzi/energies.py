"""GenZI's own lifting energies as pure functions of tensors (the fitting core has the rest).

From the fitting core (``engine.fitting.energies``), used as they are:
    ``reprojection_energy`` (Geman-McClure weighted by confidence and by the view scores normalised to
    sum 1) and ``view_selection_energy`` (``relu(tau - sum s)``). ``genzi_reprojection`` and
    ``genzi_view_selection`` below only fix GenZI's units: residuals in pixels / 512 with rho 0.2,
    tau = 3.

Scene (release loss.py, REFERENCE.md section 2)
    ``scene_penetration``: mean over the vertices with ``sdf < thr`` of ``|sdf - thr|`` (0 when none).
    ``scene_contact``: ``min(sdf) - thr``, only when no vertex penetrates (else 0): it pulls the
    closest vertex onto the surface.

Self-penetration (ours; the release uses torch-mesh-isect, which is not installable)
    Each body part (the vertices whose strongest skinning weight is one joint) is approximated by a
    capsule fitted in the rest pose: its axis runs along the part's principal direction between the
    5th and 95th percentiles of the vertices' projections, its radius is the median distance of the
    part's vertices to that axis. The axis ends are fixed affine combinations (mean of the vertices in
    the lowest / highest 10% of the projections), so the capsules follow the posed mesh
    differentiably. The energy is the mean over the body's vertices of the summed squared depths
    ``relu(-d)^2`` inside every capsule of a non-adjacent part (kinematic-tree distance >= 3: a hand
    against the torso, one leg against the other). Accuracy on the open body is stated and checked in
    tests/genzi/test_genzi_energies.py: over the rest-pose vertices, the capsule distance of each part
    to its own vertices (which lie on the true surface, distance 0) has a median below 1 cm and a
    90th percentile below 3 cm.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.body.parts import body_ancestor
from engine.body.skeleton import BODY_PARENTS
from engine.fitting import energies as core

GENZI_IMAGE_SCALE = 512.0
GENZI_RHO = 0.2
MIN_VIEWS = 3.0
SCENE_THRESHOLD = -0.01  # the Sketchfab configs; PROX-S uses 0
MIN_TREE_DISTANCE = 3
END_FRACTION = 0.10
AXIS_PERCENTILES = (5.0, 95.0)


def genzi_reprojection(projected_px: torch.Tensor, keypoints_px: torch.Tensor, confidence: torch.Tensor,
                       scores: torch.Tensor) -> torch.Tensor:
    """GenZI's 2D term: Geman-McClure with rho 0.2 on coordinates divided by 512, weighted by the
    confidences and the normalised view scores. projected, keypoints: (N, K, 2) px; confidence (N, K); scores (N,)."""
    return core.reprojection_energy(projected_px / GENZI_IMAGE_SCALE, keypoints_px / GENZI_IMAGE_SCALE, confidence,
                                    GENZI_RHO, scores)


def genzi_view_selection(scores: torch.Tensor, min_views: float = MIN_VIEWS) -> torch.Tensor:
    """``relu(3 - sum s)``."""
    return core.view_selection_energy(scores, min_views)


def scene_penetration(sdf: torch.Tensor, threshold: float = SCENE_THRESHOLD) -> torch.Tensor:
    """Mean ``|sdf - thr|`` over the vertices with ``sdf < thr``; zero when none penetrates.
    sdf: (..., V), one body per leading index (the batched lifting's rows); returns (...)."""
    inside = sdf < threshold
    depth = torch.where(inside, threshold - sdf, torch.zeros_like(sdf))  # > 0 where inside: |sdf - thr|
    return depth.sum(-1) / inside.sum(-1).clamp_min(1)


def scene_contact(sdf: torch.Tensor, threshold: float = SCENE_THRESHOLD) -> torch.Tensor:
    """``min(sdf) - thr`` when no vertex has ``sdf < thr``, else zero. sdf: (..., V); returns (...)."""
    gap = sdf.amin(-1) - threshold
    return torch.where((sdf < threshold).any(-1), torch.zeros_like(gap), gap)


@dataclass(frozen=True)
class PartCapsules:
    """Capsules of P body parts, defined by fixed vertex combinations (so they follow any posed mesh).

    low_weights, high_weights: (P, V) rows summing to 1: axis end a = low_weights @ vertices, b likewise.
    radius: (P,).  labels: (V,) part of each vertex.  non_adjacent: (P, P) bool, parts far apart in the
    kinematic tree.  parts: the joint index of each part.
    """

    low_weights: torch.Tensor
    high_weights: torch.Tensor
    radius: torch.Tensor
    labels: torch.Tensor
    non_adjacent: torch.Tensor
    parts: tuple[int, ...]

    def to(self, device) -> "PartCapsules":
        """The capsules' tensors on ``device`` (once, not at every iteration)."""
        move = lambda tensor: tensor.to(device)
        return PartCapsules(move(self.low_weights), move(self.high_weights), move(self.radius), move(self.labels),
                            move(self.non_adjacent), self.parts)

    def axes(self, vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., P, 3) axis ends for (..., V, 3) posed vertices."""
        return self.low_weights.to(vertices) @ vertices, self.high_weights.to(vertices) @ vertices

    def signed_distance(self, points: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
        """(..., Q, P) signed distance of each of the (..., Q, 3) points to each capsule of the (..., V, 3)
        posed vertices (negative inside)."""
        a, b = self.axes(vertices)
        a, direction = a[..., None, :, :], (b - a)[..., None, :, :]  # (..., 1, P, 3)
        offset = points[..., :, None, :] - a  # (..., Q, P, 3)
        t = ((offset * direction).sum(-1) / (direction * direction).sum(-1).clamp_min(1e-12)).clamp(0, 1)
        return (offset - t[..., None] * direction).norm(dim=-1) - self.radius.to(points)


def tree_distance(parents=BODY_PARENTS) -> np.ndarray:
    """(J, J) number of edges between joints in the kinematic tree."""
    count = len(parents)
    distance = np.full((count, count), count * 2, dtype=np.int64)
    for start in range(count):
        distance[start, start] = 0
        frontier = [start]
        while frontier:
            nxt = []
            for joint in frontier:
                neighbours = [parents[joint]] if parents[joint] >= 0 else []
                neighbours += [child for child, parent in enumerate(parents) if parent == joint]
                for other in neighbours:
                    if distance[start, other] > distance[start, joint] + 1:
                        distance[start, other] = distance[start, joint] + 1
                        nxt.append(other)
            frontier = nxt
    return distance


def body_part_labels(body) -> np.ndarray:
    """(V,) the body joint (0..21) of each vertex: its strongest skinning joint, hand and face joints
    (SMPL-X, SMPL-H) folded into their nearest body ancestor."""
    weights = getattr(body, "weights", None)
    weights = body.lbs_weights if weights is None else weights
    strongest = weights.detach().cpu().numpy().argmax(1)
    return body_ancestor(body.parent_index.detach().cpu().numpy())[strongest]


def fit_part_capsules(rest_vertices: np.ndarray, labels: np.ndarray) -> PartCapsules:
    """Capsules for every body joint that owns vertices (``labels``: (V,) joint per vertex; see the module docstring)."""
    rest = np.asarray(rest_vertices, dtype=np.float64)
    labels = np.asarray(labels)
    parts = tuple(int(j) for j in np.unique(labels))
    count = len(rest)
    low, high, radius = np.zeros((len(parts), count)), np.zeros((len(parts), count)), np.zeros(len(parts))
    for row, part in enumerate(parts):
        ids = np.flatnonzero(labels == part)
        points = rest[ids]
        centre = points.mean(0)
        _, _, vh = np.linalg.svd(points - centre, full_matrices=False)
        projection = (points - centre) @ vh[0]
        lo, hi = np.percentile(projection, AXIS_PERCENTILES)
        band = max(END_FRACTION * (hi - lo), 1e-6)
        low_ids, high_ids = ids[projection <= lo + band], ids[projection >= hi - band]
        low[row, low_ids] = 1.0 / len(low_ids)
        high[row, high_ids] = 1.0 / len(high_ids)
        a, b = low[row] @ rest, high[row] @ rest
        direction = b - a
        t = np.clip(((points - a) @ direction) / max(direction @ direction, 1e-12), 0, 1)
        radius[row] = np.median(np.linalg.norm(points - (a + t[:, None] * direction), axis=1))
    distance = tree_distance()
    non_adjacent = distance[np.ix_(parts, parts)] >= MIN_TREE_DISTANCE
    as_tensor = lambda array, dtype=torch.float32: torch.as_tensor(array, dtype=dtype)
    return PartCapsules(as_tensor(low), as_tensor(high), as_tensor(radius),
                        torch.as_tensor(np.searchsorted(parts, labels)), torch.as_tensor(non_adjacent), parts)


def self_penetration(vertices: torch.Tensor, capsules: PartCapsules) -> torch.Tensor:
    """Mean over vertices of the summed squared depth inside the capsules of non-adjacent parts.
    vertices: (..., V, 3), one body per leading index; returns (...)."""
    distance = capsules.signed_distance(vertices, vertices)  # (..., V, P)
    counted = capsules.non_adjacent.to(vertices.device)[capsules.labels.to(vertices.device)]  # (V, P)
    depth = torch.relu(-distance) * counted
    return (depth ** 2).sum(-1).mean(-1)
