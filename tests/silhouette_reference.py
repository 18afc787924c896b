"""The brute-force soft silhouette (SoftRas with the nearest face outside): every face at every pixel centre.

The engine's ``soft_silhouette`` works on a band around the outline; this is the reference it is checked
against (tests/render/test_silhouette_band.py): equal outside every face, values and gradients; the same
0.5 level; gradients of a fitting loss pointing the same way.
"""
from __future__ import annotations

import torch


def brute_force_soft_silhouette(screen: torch.Tensor, faces: torch.Tensor, size, sigma: float) -> torch.Tensor:
    """(H, W) coverage of one view: ``1 - prod_f (1 - D_f)`` inside some face, ``max_f D_f`` outside every face,
    ``D_f = sigmoid(s d_f^2 / sigma)`` (d_f the distance to face f, s = +1 inside it, -1 outside).

    screen: (V, 3) (column, row, depth).  faces: (F, 3).  Cost H * W * F (small cases only).
    """
    height, width = size
    rows, cols = torch.meshgrid(torch.arange(height, dtype=screen.dtype), torch.arange(width, dtype=screen.dtype), indexing="ij")
    pixel = torch.stack([cols, rows], -1).reshape(-1, 1, 1, 2)  # (P, 1, 1, 2)
    start = screen[faces][..., :2][None]  # (1, F, 3, 2)
    direction = start.roll(-1, dims=2) - start
    offset = pixel - start
    along = ((offset * direction).sum(-1) / (direction * direction).sum(-1)).clamp(0, 1)
    dist2 = ((offset - along[..., None] * direction) ** 2).sum(-1).amin(-1)  # (P, F)
    side = direction[..., 0] * offset[..., 1] - direction[..., 1] * offset[..., 0]
    inside = (side >= 0).all(-1) | (side <= 0).all(-1)
    probability = torch.sigmoid(torch.where(inside, 1.0, -1.0).to(screen) * dist2 / sigma).clamp(max=1 - 1e-7)
    union = 1 - torch.exp(torch.log1p(-probability).sum(1))
    return torch.where(inside.any(1), union, probability.amax(1)).view(height, width)
