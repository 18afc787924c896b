"""Dynamic inpainting masks from text cross-attention, and the stage-1 silhouette dilation.

Capture (diffusers attention processors)
    ``install_capture(unet, store)`` wraps the processor of every text cross-attention layer
    (``attn2``) inside ``down_blocks.2`` and ``up_blocks.1``: at 512 x 512 these are the 16 x 16 layers
    of SD2 (``down_blocks.2.attentions.{0,1}`` and ``up_blocks.1.attentions.{0,1,2}``, 20 heads each).
    The wrapper recomputes the softmax attention probabilities from the layer's own projections,
    hands the untouched call to the original processor (so the UNet's output is unchanged), and
    stores, for the text-conditioned half of a classifier-free-guidance batch, the columns of the
    chosen tokens.

Mask (GenZI ldm_inpaint.py, REFERENCE.md section 2)
    After each of the first half of the denoising steps the store's maps are averaged over layers and
    heads (``AttentionStore.end_step``). ``attention_map`` averages the last (up to) 3 steps and sums
    over the chosen tokens, with no re-softmax and the start token not excluded. ``mask_from_attention``
    applies a 3 x 3 average pool with stride 1 and zero padding counted at the borders, upsamples
    bicubically (``align_corners=False``; values may go negative) to the image size and keeps every
    pixel at or above the image's 0.7 quantile (linear interpolation): the top 30%.

Dilation (stage 1)
    OpenCV's ``dilate`` with an 11 x 11 box kernel applied 8 times equals one 81 x 81 max filter
    (a box dilated by a box is a box of the summed extents); ``dilate`` does it in one max pool.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from engine.errors import InputError

ATTENTION_BLOCKS: tuple[str, ...] = ("down_blocks.2", "up_blocks.1")
MASK_QUANTILE = 0.7
AVERAGE_STEPS = 3
POOL_RADIUS = 1  # 3 x 3
DILATE_KERNEL = 11
DILATE_ITERATIONS = 8


def is_captured_layer(name: str, blocks: tuple[str, ...] = ATTENTION_BLOCKS) -> bool:
    """Whether a processor name (``down_blocks.2.attentions.0.transformer_blocks.0.attn2.processor``)
    is a text cross-attention layer of one of ``blocks``."""
    return any(name.startswith(block + ".") for block in blocks) and name.endswith("attn2.processor")


@dataclass
class AttentionStore:
    """Cross-attention maps of the chosen tokens, per denoising step.

    token_indices: positions in the 77-token sequence (BOS is 0), shared by the batch.
    guidance: whether the UNet batch is [unconditional, text] (only the text half is kept).
    current: maps of this step, one (B, heads, N, K) tensor per captured layer call.
    history: one (B, r, r, K) float32 tensor per finished step (mean over layers and heads).
    layers: names of the layers that stored something during the last step.
    """

    token_indices: tuple[int, ...]
    guidance: bool = True
    active: bool = True
    current: list = field(default_factory=list)
    history: list = field(default_factory=list)
    layers: list = field(default_factory=list)

    def add(self, name: str, probabilities: torch.Tensor, heads: int) -> None:
        """probabilities: (batch * heads, N, 77) softmax over the text tokens."""
        if not self.active:
            return
        rows, queries, tokens = probabilities.shape
        maps = probabilities.reshape(rows // heads, heads, queries, tokens)
        if self.guidance:
            maps = maps[maps.shape[0] // 2:]
        index = torch.as_tensor(self.token_indices, device=maps.device)
        self.current.append(maps.index_select(-1, index).float())
        self.layers.append(name)

    def end_step(self) -> None:
        if not self.current:
            raise RuntimeError("no cross-attention was captured in this step; check the UNet's block names")
        resolutions = {maps.shape[2] for maps in self.current}
        if len(resolutions) != 1:
            raise RuntimeError(f"captured layers have different resolutions {sorted(resolutions)}")
        stacked = torch.stack([maps.mean(1) for maps in self.current]).mean(0)  # (B, N, K)
        side = int(round(stacked.shape[1] ** 0.5))
        self.history.append(stacked.reshape(stacked.shape[0], side, side, -1))
        self.current = []

    def reset_layers(self) -> None:
        self.layers = []


class CaptureCrossAttention:
    """Wraps one layer's processor: stores its attention probabilities, then runs the original call."""

    def __init__(self, store: AttentionStore, name: str, inner):
        self.store, self.name, self.inner = store, name, inner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        if self.store.active and encoder_hidden_states is not None:
            with torch.no_grad():
                query = attn.head_to_batch_dim(attn.to_q(hidden_states))
                key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
                self.store.add(self.name, attn.get_attention_scores(query, key, None), attn.heads)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)


def install_capture(unet, store: AttentionStore, blocks: tuple[str, ...] = ATTENTION_BLOCKS) -> dict:
    """Wrap the named blocks' cross-attention processors; returns the original processors to restore."""
    original = dict(unet.attn_processors)
    wrapped = {name: CaptureCrossAttention(store, name, processor) if is_captured_layer(name, blocks) else processor
               for name, processor in original.items()}
    if not any(isinstance(processor, CaptureCrossAttention) for processor in wrapped.values()):
        raise InputError(f"the UNet has no cross-attention layers in {', '.join(blocks)}; an SD2-style UNet is needed")
    unet.set_attn_processor(wrapped)
    return original


def attention_map(history: list[torch.Tensor], average_steps: int = AVERAGE_STEPS) -> torch.Tensor:
    """(B, r, r): the last ``average_steps`` steps averaged, then summed over the chosen tokens."""
    if not history:
        raise ValueError("no attention has been stored yet")
    return torch.stack(history[-average_steps:]).mean(0).sum(-1)


def mask_from_attention(attention: torch.Tensor, size: int, quantile: float = MASK_QUANTILE,
                        pool_radius: int = POOL_RADIUS) -> torch.Tensor:
    """(B, size, size) bool: pixels at or above each image's ``quantile`` of the pooled, upsampled map."""
    maps = attention.float()[:, None]
    kernel = 2 * pool_radius + 1
    pooled = F.avg_pool2d(maps, kernel, stride=1, padding=pool_radius, count_include_pad=True)
    # The threshold is taken in float64: a float32 quantile can round below the 0.7 point and keep a pixel too many.
    upsampled = F.interpolate(pooled, size=(size, size), mode="bicubic", align_corners=False)[:, 0].double()
    thresholds = torch.quantile(upsampled.reshape(len(upsampled), -1), quantile, dim=1, interpolation="linear")
    return upsampled >= thresholds[:, None, None]


def dilate(masks: torch.Tensor, kernel: int = DILATE_KERNEL, iterations: int = DILATE_ITERATIONS) -> torch.Tensor:
    """(B, H, W) bool masks dilated by a ``kernel`` box ``iterations`` times (one max filter of
    ``(kernel - 1) * iterations + 1``)."""
    size = (kernel - 1) * iterations + 1
    dilated = F.max_pool2d(masks.float()[:, None], size, stride=1, padding=size // 2)
    return dilated[:, 0] > 0.5
