"""SAM for InteractVLM's MV-Loc (REFERENCE.md section 1), built from ``transformers``' SAM parts.

``segment_anything`` imports torchvision, so the modules are transformers' ``SamVisionEncoder``,
``SamPromptEncoder`` and ``SamMaskDecoder``, and segment_anything-format checkpoints (SAM's ``.pth``, LISA and
InteractVLM's merged folders) are converted here by explicit key rules.

Symbols used in shapes: ``S`` = ``spec.image_size`` (1024 for the released models), ``s = S / patch`` (64),
``C`` = ``spec.output_channels`` (256, also the prompt dimension), ``N`` = number of (view, prompt) pairs,
``T`` = prompt tokens per mask (1 for InteractVLM).

MV-Loc the LISA way: no points, boxes or masks. The projected ``[SEG]`` embedding is the only sparse prompt
token, the dense prompt is the prompt encoder's "no mask" embedding, and the decoder returns one mask
(``multimask_output=False``) at ``4s x 4s`` that is upsampled to ``S x S``.

Key mapping, segment_anything -> ours (the exact regex rules are ``_ENCODER_RULES`` and ``_DECODER_RULES``).
``{n}`` is a number, ``{p}`` one of ``q_proj|k_proj|v_proj|out_proj``; a rule ending in ``.`` names a module whose
``weight``/``bias`` carry over. ``D`` is a decoder root (``mask_decoder``, ``human_mask_decoder``,
``object_mask_decoder``); its rules below are relative to ``D.`` on the left and ``mask_decoders.D.`` on the right.

    image_encoder.pos_embed                          -> image_encoder.pos_embed
    image_encoder.patch_embed.proj.                  -> image_encoder.patch_embed.projection.
    image_encoder.blocks.{n}.norm1. | norm2.         -> image_encoder.layers.{n}.layer_norm1. | layer_norm2.
    image_encoder.blocks.{n}.attn.qkv. | proj.       -> image_encoder.layers.{n}.attn.qkv. | proj.
    image_encoder.blocks.{n}.attn.rel_pos_h | _w     -> image_encoder.layers.{n}.attn.rel_pos_h | _w
    image_encoder.blocks.{n}.mlp.lin1. | lin2.       -> image_encoder.layers.{n}.mlp.lin1. | lin2.
    image_encoder.neck.0. | 1. | 2. | 3.             -> image_encoder.neck.conv1. | layer_norm1. | conv2. | layer_norm2.
    prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
                                                     -> prompt_encoder.shared_embedding.positional_embedding
                                                        (same (2, C/2) matrix: no transpose, no rescaling)
    prompt_encoder.point_embeddings.{n}.             -> prompt_encoder.point_embed.{n}.
    prompt_encoder.not_a_point_embed. | no_mask_embed.   (unchanged)
    prompt_encoder.mask_downscaling.0. | 1. | 3. | 4. | 6.
                                                     -> prompt_encoder.mask_embed.conv1. | layer_norm1. | conv2.
                                                        | layer_norm2. | conv3.
    iou_token. | mask_tokens.                            (unchanged)
    transformer.layers.{n}.A.{p}.                        (unchanged; A = self_attn, cross_attn_token_to_image,
                                                          cross_attn_image_to_token)
    transformer.layers.{n}.norm1. .. norm4.          -> transformer.layers.{n}.layer_norm1. .. layer_norm4.
    transformer.layers.{n}.mlp.lin1. | lin2.             (unchanged)
    transformer.final_attn_token_to_image.{p}.           (unchanged)
    transformer.norm_final_attn.                     -> transformer.layer_norm_final_attn.
    output_upscaling.0. | 1. | 3.                    -> upscale_conv1. | upscale_layer_norm. | upscale_conv2.
    output_hypernetworks_mlps.{n}.layers.0. | 1. | 2.
                                                     -> output_hypernetworks_mlps.{n}.proj_in. | layers.0. | proj_out.
    iou_prediction_head.layers.0. | 1. | 2.          -> iou_prediction_head.proj_in. | layers.0. | proj_out.

``pixel_mean``/``pixel_std`` (present in some exports, e.g. the ones transformers' converter handles) are
checked against SAM's constants and dropped. Keys outside ``prefix`` are ignored (a merged InteractVLM
checkpoint also holds the language model).
"""
from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.sam.modeling_sam import (
    SamConfig,
    SamMaskDecoder,
    SamMaskDecoderConfig,
    SamPromptEncoder,
    SamPromptEncoderConfig,
    SamVisionConfig,
    SamVisionEncoder,
)

from engine.errors import InputError, MissingAssetError

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
SAM_CHECKPOINT_HINT = ("Place the segment_anything checkpoint there (for example sam_vit_h_4b8939.pth from the "
                       "segment-anything release); nothing is downloaded at run time.")


# --------------------------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamSpec:
    """One SAM variant, in segment_anything's ``build_sam_*`` terms.

    Fields:
        name: registry name (``vit_h``, ``vit_l``, ``vit_b``, ``tiny``).
        hidden_size, depth, num_heads: the ViT image encoder (embed dim, blocks, heads).
        global_attn_indexes: blocks with global attention; every other block uses ``window_size`` windows.
        window_size: side of the attention windows, in patches.
        mlp_ratio: ViT MLP width / hidden size.
        patch_size: pixels per patch side.
        image_size: ``S``, the square encoder input (1024 for released models).
        output_channels: ``C``, the neck's channels; also the prompt and mask-decoder dimension.
        mask_in_chans: hidden channels of the (unused by MV-Loc, but stored) mask-prompt downscaler.
        decoder_depth, decoder_heads, decoder_mlp_dim: the two-way transformer of each mask decoder.
        iou_head_hidden_dim: hidden width of the IoU head (its depth is SAM's fixed 3).
        num_multimask_outputs: SAM's 3; the decoder holds that many + 1 mask tokens.
    """

    name: str
    hidden_size: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    mlp_ratio: float = 4.0
    patch_size: int = 16
    image_size: int = 1024
    output_channels: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3

    def __post_init__(self):
        problems = [
            ("image_size must be a multiple of patch_size", self.image_size % self.patch_size == 0),
            ("hidden_size must be a multiple of num_heads", self.hidden_size % self.num_heads == 0),
            ("output_channels must be a multiple of 8 (the mask upscaler divides it by 8)",
             self.output_channels % 8 == 0),
            ("mask_in_chans must be a multiple of 4", self.mask_in_chans % 4 == 0),
            ("global_attn_indexes must name blocks in [0, depth)",
             all(0 <= index < self.depth for index in self.global_attn_indexes)),
        ]
        failed = [message for message, ok in problems if not ok]
        if failed:
            raise InputError(f"SamSpec {self.name!r}: " + "; ".join(failed))

    @property
    def embedding_size(self) -> int:
        """``s``: side of the image embedding grid."""
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """``4s``: side of the decoder's low-resolution mask logits."""
        return 4 * self.embedding_size


SAM_VIT_H = SamSpec("vit_h", hidden_size=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31))
SAM_VIT_L = SamSpec("vit_l", hidden_size=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23))
SAM_VIT_B = SamSpec("vit_b", hidden_size=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11))
# Tests only: 128 px input gives an 8x8 grid, so the 4x4 windows really partition it; widths that differ
# (hidden 32, C 48, IoU head 24) give every renamed tensor a shape that pins which layer it is.
SAM_TINY = SamSpec("tiny", hidden_size=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=4,
                   image_size=128, output_channels=48, mask_in_chans=8, decoder_heads=2, decoder_mlp_dim=64,
                   iou_head_hidden_dim=24)
SAM_SPECS: Mapping[str, SamSpec] = {spec.name: spec for spec in (SAM_VIT_H, SAM_VIT_L, SAM_VIT_B, SAM_TINY)}


def sam_config(spec: SamSpec) -> SamConfig:
    """The transformers ``SamConfig`` that reproduces segment_anything's modules for ``spec``."""
    vision = SamVisionConfig(
        hidden_size=spec.hidden_size, num_hidden_layers=spec.depth, num_attention_heads=spec.num_heads,
        global_attn_indexes=list(spec.global_attn_indexes), window_size=spec.window_size, mlp_ratio=spec.mlp_ratio,
        patch_size=spec.patch_size, image_size=spec.image_size, output_channels=spec.output_channels,
        # segment_anything's PositionEmbeddingRandom(embed_dim // 2) lives in the vision config here.
        num_pos_feats=spec.output_channels // 2,
    )
    prompt = SamPromptEncoderConfig(hidden_size=spec.output_channels, image_size=spec.image_size,
                                    patch_size=spec.patch_size, mask_input_channels=spec.mask_in_chans)
    decoder = SamMaskDecoderConfig(
        hidden_size=spec.output_channels, mlp_dim=spec.decoder_mlp_dim, num_hidden_layers=spec.decoder_depth,
        num_attention_heads=spec.decoder_heads, num_multimask_outputs=spec.num_multimask_outputs,
        iou_head_depth=3, iou_head_hidden_dim=spec.iou_head_hidden_dim,
        # segment_anything's two-way blocks use nn.LayerNorm's default eps (1e-5); transformers defaults to 1e-6.
        layer_norm_eps=1e-5,
    )
    config = SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    # SamModel sets this for its decoder; standalone, None works but warns, and eager is segment_anything's math.
    config.mask_decoder_config._attn_implementation = "eager"
    return config


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) after SAM's ResizeLongestSide: the longest side becomes ``size``, rounded half up."""
    scale = size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def _check_decoder_names(decoders: Sequence[str]) -> tuple[str, ...]:
    names = (decoders,) if isinstance(decoders, str) else tuple(decoders)
    if not names or len(set(names)) != len(names):
        raise InputError(f"decoders must be a non-empty list of distinct names, got {names}")
    bad = [name for name in names if not re.fullmatch(r"[A-Za-z_]\w*", name) or name in _NON_DECODER_ROOTS]
    if bad:
        raise InputError(f"decoder names must be identifiers other than {_NON_DECODER_ROOTS}, got {bad}")
    return names


class SamParts(nn.Module):
    """SAM's image encoder, prompt encoder and one or more mask decoders (``mask_decoders[name]``).

    ``decoders=("mask_decoder",)`` for single-task models, ``("human_mask_decoder", "object_mask_decoder")``
    for the joint model. Which parts train is the caller's choice; only the fixed Fourier matrix is frozen here.
    """

    def __init__(self, spec: SamSpec, decoders: Sequence[str] = ("mask_decoder",)):
        super().__init__()
        config = sam_config(spec)
        self.spec = spec
        self.decoder_names = _check_decoder_names(decoders)
        self.image_encoder = SamVisionEncoder(config.vision_config)
        # transformers' SamModel keeps a second, tied copy of the Fourier matrix (shared_image_embedding) for the
        # image positional encoding; segment_anything has one buffer, so we reuse the prompt encoder's copy.
        self.prompt_encoder = SamPromptEncoder(config)
        # A fixed random matrix (a buffer in segment_anything) that transformers stores as a Parameter.
        self.prompt_encoder.shared_embedding.positional_embedding.requires_grad_(False)
        self.mask_decoders = nn.ModuleDict(
            {name: SamMaskDecoder(config.mask_decoder_config) for name in self.decoder_names})

    def _reference(self) -> torch.Tensor:
        """A parameter whose device and dtype the inputs are moved to."""
        return self.prompt_encoder.no_mask_embed.weight

    def preprocess(self, images) -> torch.Tensor:
        """uint8 images (B, H, W, 3), numpy or torch -> (B, 3, S, S) encoder input.

        SAM's preprocessing: resize so the longest side is S (bilinear, antialiased), normalise with
        PIXEL_MEAN/PIXEL_STD, zero-pad bottom/right. Images that are already S x S are only normalised. Unlike
        segment_anything's numpy path (PIL resize), the resized values are not rounded back to uint8.
        """
        pixels = _as_uint8_images(images)
        size = self.spec.image_size
        new_h, new_w = resized_shape(pixels.shape[1], pixels.shape[2], size)
        reference = self._reference()
        x = pixels.to(reference.device).permute(0, 3, 1, 2).float()
        if (new_h, new_w) != tuple(x.shape[2:]):
            x = F.interpolate(x, (new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(PIXEL_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(PIXEL_STD, device=x.device).view(1, 3, 1, 1)
        x = F.pad((x - mean) / std, (0, size - new_w, 0, size - new_h))
        return x.to(reference.dtype)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed pixels -> (B, C, s, s) image embeddings."""
        return self.image_encoder(pixel_values=pixels).last_hidden_state

    def image_positional_embedding(self) -> torch.Tensor:
        """(1, C, s, s): random-Fourier encoding of the embedding cells' centres (segment_anything's get_dense_pe)."""
        side = self.spec.embedding_size
        gaussian = self.prompt_encoder.shared_embedding.positional_embedding
        centres = (torch.arange(side, device=gaussian.device, dtype=gaussian.dtype) + 0.5) / side
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        encoded = self.prompt_encoder.shared_embedding(torch.stack([x, y], dim=-1))  # (s, s, C), x first
        return encoded.permute(2, 0, 1).unsqueeze(0)

    def decode(self, decoder_name: str, image_embeddings: torch.Tensor, prompt_tokens: torch.Tensor) -> torch.Tensor:
        """One mask per (image embedding, prompt) pair, the LISA/InteractVLM way.

        image_embeddings: (N, C, s, s); prompt_tokens: (N, T, C), the sparse prompt of each pair.
        Returns low-resolution mask logits (N, 4s, 4s).
        """
        decoder = self._decoder(decoder_name)
        count, channels, side = self._check_decode_inputs(image_embeddings, prompt_tokens)
        dtype = decoder.iou_token.weight.dtype
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, channels, 1, 1).expand(count, -1, side, side)
        positional = self.image_positional_embedding().expand(count, -1, -1, -1)
        # transformers' decoder takes sparse prompts as (batch, point_batch, tokens, C); one point batch per pair.
        masks, _ = decoder(
            image_embeddings=image_embeddings.to(dtype), image_positional_embeddings=positional.to(dtype),
            sparse_prompt_embeddings=prompt_tokens.to(dtype).unsqueeze(1), dense_prompt_embeddings=dense.to(dtype),
            multimask_output=False,
        )
        return masks[:, 0, 0]  # (N, point_batch=1, masks=1, 4s, 4s) -> (N, 4s, 4s)

    def upsample(self, low_res_logits: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """(N, 4s, 4s) logits -> (N, size, size), bilinear as segment_anything's postprocess_masks (size = S)."""
        size = self.spec.image_size if size is None else size
        upsampled = F.interpolate(low_res_logits.unsqueeze(1), (size, size), mode="bilinear", align_corners=False)
        return upsampled.squeeze(1)

    def _decoder(self, name: str) -> SamMaskDecoder:
        if name not in self.mask_decoders:
            raise InputError(f"unknown mask decoder {name!r}; this model has {list(self.mask_decoders)}")
        return self.mask_decoders[name]

    def _check_decode_inputs(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> tuple[int, int, int]:
        channels, side = self.spec.output_channels, self.spec.embedding_size
        if embeddings.dim() != 4 or tuple(embeddings.shape[1:]) != (channels, side, side):
            raise InputError(f"image_embeddings must be (N, {channels}, {side}, {side}), "
                             f"got {tuple(embeddings.shape)}")
        if tokens.dim() != 3 or tokens.shape[0] != embeddings.shape[0] or tokens.shape[2] != channels:
            raise InputError(f"prompt_tokens must be (N={embeddings.shape[0]}, T, {channels}), "
                             f"got {tuple(tokens.shape)}")
        return embeddings.shape[0], channels, side


def _as_uint8_images(images) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if not torch.is_tensor(tensor) or tensor.dtype != torch.uint8:
        kind = getattr(tensor, "dtype", type(tensor).__name__)
        raise InputError(f"images must be uint8 arrays of shape (B, H, W, 3), got {kind}")
    if tensor.dim() != 4 or tensor.shape[-1] != 3 or 0 in tensor.shape:
        raise InputError(f"images must have shape (B, H, W, 3) with B, H, W > 0, got {tuple(tensor.shape)}")
    return tensor


# --------------------------------------------------------------------------------------------------------------
# Key conversion
# --------------------------------------------------------------------------------------------------------------

_PLACEHOLDERS = {"{n}": r"(\d+)", "{p}": r"(q_proj|k_proj|v_proj|out_proj)"}
_NON_DECODER_ROOTS = ("image_encoder", "prompt_encoder", "mask_decoders", "pixel_mean", "pixel_std")

_ENCODER_RULES = (
    ("image_encoder.pos_embed", "image_encoder.pos_embed"),
    ("image_encoder.patch_embed.proj.", "image_encoder.patch_embed.projection."),
    ("image_encoder.blocks.{n}.norm1.", "image_encoder.layers.{n}.layer_norm1."),
    ("image_encoder.blocks.{n}.norm2.", "image_encoder.layers.{n}.layer_norm2."),
    ("image_encoder.blocks.{n}.attn.qkv.", "image_encoder.layers.{n}.attn.qkv."),
    ("image_encoder.blocks.{n}.attn.proj.", "image_encoder.layers.{n}.attn.proj."),
    ("image_encoder.blocks.{n}.attn.rel_pos_h", "image_encoder.layers.{n}.attn.rel_pos_h"),
    ("image_encoder.blocks.{n}.attn.rel_pos_w", "image_encoder.layers.{n}.attn.rel_pos_w"),
    ("image_encoder.blocks.{n}.mlp.lin1.", "image_encoder.layers.{n}.mlp.lin1."),
    ("image_encoder.blocks.{n}.mlp.lin2.", "image_encoder.layers.{n}.mlp.lin2."),
    ("image_encoder.neck.0.", "image_encoder.neck.conv1."),
    ("image_encoder.neck.1.", "image_encoder.neck.layer_norm1."),
    ("image_encoder.neck.2.", "image_encoder.neck.conv2."),
    ("image_encoder.neck.3.", "image_encoder.neck.layer_norm2."),
    # Same (2, C/2) matrix in both: transformers' `scale` only sets the random init, it is not applied later.
    ("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
     "prompt_encoder.shared_embedding.positional_embedding"),
    ("prompt_encoder.point_embeddings.{n}.", "prompt_encoder.point_embed.{n}."),
    ("prompt_encoder.not_a_point_embed.", "prompt_encoder.not_a_point_embed."),
    ("prompt_encoder.no_mask_embed.", "prompt_encoder.no_mask_embed."),
    ("prompt_encoder.mask_downscaling.0.", "prompt_encoder.mask_embed.conv1."),
    ("prompt_encoder.mask_downscaling.1.", "prompt_encoder.mask_embed.layer_norm1."),
    ("prompt_encoder.mask_downscaling.3.", "prompt_encoder.mask_embed.conv2."),
    ("prompt_encoder.mask_downscaling.4.", "prompt_encoder.mask_embed.layer_norm2."),
    ("prompt_encoder.mask_downscaling.6.", "prompt_encoder.mask_embed.conv3."),
)

# Relative to a decoder root. segment_anything's MLP is `layers.0..2`; transformers' is proj_in/layers.0/proj_out.
_DECODER_RULES = (
    ("iou_token.", "iou_token."),
    ("mask_tokens.", "mask_tokens."),
    ("transformer.layers.{n}.self_attn.{p}.", "transformer.layers.{n}.self_attn.{p}."),
    ("transformer.layers.{n}.cross_attn_token_to_image.{p}.", "transformer.layers.{n}.cross_attn_token_to_image.{p}."),
    ("transformer.layers.{n}.cross_attn_image_to_token.{p}.", "transformer.layers.{n}.cross_attn_image_to_token.{p}."),
    ("transformer.layers.{n}.norm1.", "transformer.layers.{n}.layer_norm1."),
    ("transformer.layers.{n}.norm2.", "transformer.layers.{n}.layer_norm2."),
    ("transformer.layers.{n}.norm3.", "transformer.layers.{n}.layer_norm3."),
    ("transformer.layers.{n}.norm4.", "transformer.layers.{n}.layer_norm4."),
    ("transformer.layers.{n}.mlp.lin1.", "transformer.layers.{n}.mlp.lin1."),
    ("transformer.layers.{n}.mlp.lin2.", "transformer.layers.{n}.mlp.lin2."),
    ("transformer.final_attn_token_to_image.{p}.", "transformer.final_attn_token_to_image.{p}."),
    ("transformer.norm_final_attn.", "transformer.layer_norm_final_attn."),
    ("output_upscaling.0.", "upscale_conv1."),
    ("output_upscaling.1.", "upscale_layer_norm."),
    ("output_upscaling.3.", "upscale_conv2."),
    ("output_hypernetworks_mlps.{n}.layers.0.", "output_hypernetworks_mlps.{n}.proj_in."),
    ("output_hypernetworks_mlps.{n}.layers.1.", "output_hypernetworks_mlps.{n}.layers.0."),
    ("output_hypernetworks_mlps.{n}.layers.2.", "output_hypernetworks_mlps.{n}.proj_out."),
    ("iou_prediction_head.layers.0.", "iou_prediction_head.proj_in."),
    ("iou_prediction_head.layers.1.", "iou_prediction_head.layers.0."),
    ("iou_prediction_head.layers.2.", "iou_prediction_head.proj_out."),
)


@dataclass(frozen=True)
class _Template:
    """One side of a rule: a full-match regex and the replacement that writes this side from the other's groups."""

    pattern: re.Pattern
    replacement: str


def _template(text: str) -> _Template:
    pattern, replacement, group = "", "", 0
    for piece in re.split(r"(\{[np]\})", text):
        if piece in _PLACEHOLDERS:
            group += 1
            pattern, replacement = pattern + _PLACEHOLDERS[piece], replacement + f"\\g<{group}>"
        else:
            pattern, replacement = pattern + re.escape(piece), replacement + piece
    if text.endswith("."):  # a module: its leaf parameter carries over
        group += 1
        pattern, replacement = pattern + "(weight|bias)", replacement + f"\\g<{group}>"
    return _Template(re.compile(pattern), replacement)


def _compile(rules) -> tuple[tuple[_Template, _Template], ...]:
    compiled = []
    for source, target in rules:
        # Groups are refilled by position, so both sides must use the same placeholders in the same order.
        assert re.findall(r"\{[np]\}", source) == re.findall(r"\{[np]\}", target), (source, target)
        compiled.append((_template(source), _template(target)))
    return tuple(compiled)


_ENCODER_TABLE = _compile(_ENCODER_RULES)
_DECODER_TABLE = _compile(_DECODER_RULES)


def _rename(key: str, table, to_ours: bool) -> str | None:
    for sa_side, ours_side in table:
        source, target = (sa_side, ours_side) if to_ours else (ours_side, sa_side)
        match = source.pattern.fullmatch(key)
        if match:
            return match.expand(target.replacement)
    return None


def sa_key_to_ours(key: str, decoders: Sequence[str] = ("mask_decoder",)) -> str | None:
    """Our name for one segment_anything key (no prefix), or None when no rule covers it."""
    root, _, rest = key.partition(".")
    if root in ("image_encoder", "prompt_encoder"):
        return _rename(key, _ENCODER_TABLE, to_ours=True)
    if root in decoders:
        renamed = _rename(rest, _DECODER_TABLE, to_ours=True)
        return None if renamed is None else f"mask_decoders.{root}.{renamed}"
    return None


def ours_key_to_sa(key: str) -> str | None:
    """The segment_anything name for one of our keys, or None when no rule covers it."""
    if key.startswith("mask_decoders."):
        pieces = key.split(".", 2)
        renamed = _rename(pieces[2], _DECODER_TABLE, to_ours=False) if len(pieces) == 3 else None
        return None if renamed is None else f"{pieces[1]}.{renamed}"
    return _rename(key, _ENCODER_TABLE, to_ours=False)


def _check_pixel_statistic(key: str, value: torch.Tensor) -> None:
    expected = torch.tensor(PIXEL_MEAN if key == "pixel_mean" else PIXEL_STD)
    if value.numel() != 3 or not torch.allclose(value.detach().float().flatten().cpu(), expected, rtol=1e-2):
        raise InputError(f"checkpoint {key} is {value.flatten().tolist()}, but SAM preprocessing uses "
                         f"{list(expected.tolist())}; this is not a SAM-normalised checkpoint")


def from_segment_anything(state_dict: Mapping[str, torch.Tensor], decoders: Sequence[str] = ("mask_decoder",),
                          prefix: str = "") -> dict[str, torch.Tensor]:
    """segment_anything-layout tensors -> our (SamParts) names; tensors are shared, not copied.

    Only keys under ``prefix`` (e.g. ``"model.visual_model."``) are read. Each root in ``decoders`` is read as a
    mask decoder. Keys no rule covers are kept under their own name, so that strict loading reports them as
    unexpected; one that already looks like ours means the file mixes layouts, which raises InputError.
    """
    decoders = _check_decoder_names(decoders)
    converted: dict[str, torch.Tensor] = {}
    for full_key, value in state_dict.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix):]
        if key in ("pixel_mean", "pixel_std"):
            _check_pixel_statistic(key, value)
            continue
        ours = sa_key_to_ours(key, decoders)
        if ours is None and ours_key_to_sa(key) is not None:
            raise InputError(f"{full_key} is a transformers-layout name inside a segment_anything checkpoint; "
                             "expected segment_anything names such as image_encoder.blocks.0.norm1.weight")
        converted[ours or key] = value
    return converted


def to_segment_anything(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Our (SamParts) tensors -> segment_anything layout under ``prefix``; raises InputError on unknown keys."""
    converted, unknown = {}, []
    for key, value in state_dict.items():
        sa_key = ours_key_to_sa(key)
        if sa_key is None:
            unknown.append(key)
        else:
            converted[prefix + sa_key] = value
    if unknown:
        raise InputError(f"no segment_anything name for {len(unknown)} keys: {_preview(unknown)}")
    return converted


# --------------------------------------------------------------------------------------------------------------
# Strict loading
# --------------------------------------------------------------------------------------------------------------

def _preview(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(str(name) for name in names[:limit])
    return shown + (f", ... and {len(names) - limit} more" if len(names) > limit else "")


class CheckpointMismatch(InputError):
    """A checkpoint whose names or shapes differ from the model's.

    ``missing``: names the model needs that the file lacks; ``unexpected``: names in the file the model has no
    place for; ``mismatched``: ``(name, model shape, file shape)``. Names are as the file spells them when the
    loader could translate them.
    """

    def __init__(self, what: str, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                 mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = ()):
        self.what = what
        self.missing = tuple(missing)
        self.unexpected = tuple(unexpected)
        self.mismatched = tuple(mismatched)
        super().__init__(self._message())

    def _message(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {_preview(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {_preview(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{name} (model {list(model)}, file {list(found)})" for name, model, found in self.mismatched]
            parts.append(f"{len(self.mismatched)} with the wrong shape: {_preview(shapes)}")
        return (f"{self.what} does not match the model: " + "; ".join(parts)
                + ". Check that the checkpoint is the variant the model expects.")


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str, *,
                           display: Callable[[str], str] | None = None, assign: bool = False) -> None:
    """Load ``state_dict`` into ``module`` only if every name and shape matches exactly.

    Raises CheckpointMismatch listing all missing, unexpected and wrongly shaped keys (not just the first
    problem torch would hit). ``what`` names the source in the message (e.g. ``"SAM checkpoint /m/sam.pth"``);
    ``display`` maps module names back to the file's own names for that message. ``assign=True`` adopts the
    given tensors (use it for modules built on the meta device). Reused by every checkpoint loader.
    """
    show = display or (lambda key: key)
    expected = module.state_dict()
    missing = [show(key) for key in expected if key not in state_dict]
    unexpected = [show(key) for key in state_dict if key not in expected]
    mismatched = [(show(key), tuple(expected[key].shape), tuple(value.shape)) for key, value in state_dict.items()
                  if key in expected and tuple(value.shape) != tuple(expected[key].shape)]
    if missing or unexpected or mismatched:
        raise CheckpointMismatch(what, missing, unexpected, mismatched)
    module.load_state_dict(state_dict, strict=True, assign=assign)


def read_torch_weights(path: Path) -> dict[str, torch.Tensor]:
    """A plain {name: tensor} checkpoint, read without executing pickled code."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise InputError(f"{path} holds pickled Python objects, not only tensors; it is refused (only weights_only "
                         "checkpoints are read). Re-save it as a state dict of tensors.") from error
    except (RuntimeError, EOFError) as error:
        raise InputError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
    if not isinstance(loaded, Mapping) or not all(isinstance(k, str) and torch.is_tensor(v)
                                                  for k, v in loaded.items()):
        raise InputError(f"{path} must hold a flat {{name: tensor}} state dict in segment_anything layout")
    return dict(loaded)


def load_sam_checkpoint(path: Path | str, spec: SamSpec, decoders: Sequence[str] = ("mask_decoder",),
                        dtype: torch.dtype = torch.float32, prefix: str = "") -> SamParts:
    """SamParts (CPU, eval mode, ``dtype``) from a segment_anything-layout ``.pth``.

    ``prefix`` selects SAM inside a larger file (``"model.visual_model."`` for InteractVLM/LISA). Every decoder
    root present under the prefix must be listed in ``decoders``. Raises MissingAssetError for an absent file,
    InputError for a pickle that is not plain weights, CheckpointMismatch for any name or shape difference.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingAssetError("SAM checkpoint", path, SAM_CHECKPOINT_HINT)
    weights = read_torch_weights(path)
    converted = from_segment_anything(weights, decoders, prefix)
    if not converted:
        roots = sorted({key.split(".")[0] for key in weights})
        raise InputError(f"{path} has no tensors under prefix {prefix!r}; its keys start with {_preview(roots, 10)}")
    # Built on the meta device: no time or memory spent on a random init the checkpoint overwrites.
    with torch.device("meta"):
        parts = SamParts(spec, decoders)
    load_state_dict_strict(parts, converted, f"SAM checkpoint {path}", assign=True,
                           display=lambda key: prefix + (ours_key_to_sa(key) or key))
    left_on_meta = [name for name, tensor in parts.state_dict(keep_vars=True).items() if tensor.is_meta]
    left_on_meta += [name for name, tensor in parts.named_buffers() if tensor.is_meta]
    if left_on_meta:  # a non-persistent buffer a newer transformers might add would never be filled
        raise RuntimeError(f"SAM tensors left uninitialised after loading: {left_on_meta}")
    return parts.to(dtype).eval()
