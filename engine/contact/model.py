"""InteractVLM's network (REFERENCE.md section 1): VLM Ψ, projection Γ, camera lift Φ and MV-Loc.

Stages of one prediction, in the paper's symbols:
1. Ψ reads the image and the prompt and emits the contact token(s) ``[SEG]`` (or ``[HSEG]``/``[OSEG]``).
2. Γ maps the last hidden state that emitted each token to a prompt embedding E (``prompt_dim``).
3. Φ makes E view-aware: E_v = E * sigmoid(T_v(MLP(k_v))) with k_v the view's camera parameters.
4. MV-Loc: SAM's encoder Θ embeds each render; the token's decoder Ω takes E_v as its one sparse
   prompt and outputs one mask per view, upsampled to the render resolution.
5. ``engine.rll`` lifts the masks to the 3D vertices (outside this module).

Parameter names follow ours: ``vlm.*``, ``sam.*``, ``text_hidden_fcs.*`` (Γ), ``cam_pose_encoder.*``
(Φ); ``engine.contact.checkpoint`` maps them to the released layout.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.contact.config import ContactModelConfig
from engine.contact.sam import SAM_SPECS, SamParts
from engine.contact.vlm import LlavaVLM

CAMERA_INPUTS = 5


class CameraLift(nn.Module):
    """Φ ("FeatLift"): ``Linear(5,h) ReLU Linear(h,h) ReLU`` shared, then one ``Linear(h, dim)`` per view."""

    def __init__(self, num_views: int, hidden: int, dim: int):
        super().__init__()
        self.spatial_encoder = nn.Sequential(nn.Linear(CAMERA_INPUTS, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.view_transforms = nn.ModuleList(nn.Linear(hidden, dim) for _ in range(num_views))

    def gates(self, conditioning: torch.Tensor) -> torch.Tensor:
        """(V, 5) camera inputs -> (V, dim) sigmoid gates. Independent of the image: computed once per preset."""
        weight = self.spatial_encoder[0].weight
        features = self.spatial_encoder(conditioning.to(weight.device, weight.dtype))
        return torch.stack([torch.sigmoid(transform(features[view])) for view, transform in enumerate(self.view_transforms)])

    def forward(self, embeddings: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        """(N, dim) token embeddings -> (N, V, dim) view-aware prompts."""
        return embeddings[:, None] * self.gates(conditioning)[None]


def projection(hidden: int, dim: int) -> nn.Sequential:
    """Γ: ``Linear(h, h) -> ReLU -> Linear(h, dim)`` (LISA's ``text_hidden_fcs[0]``; index 3 is a no-op dropout)."""
    return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.Dropout(0.0))


class InteractVLM(nn.Module):
    def __init__(self, config: ContactModelConfig):
        super().__init__()
        self.config = config
        spec = SAM_SPECS[config.sam]
        self.vlm = LlavaVLM(config)
        self.sam = SamParts(spec, decoders=config.decoders)
        self.text_hidden_fcs = projection(config.language.hidden, spec.output_channels)
        self.cam_pose_encoder = CameraLift(config.num_views, config.camera_hidden, spec.output_channels)

    @property
    def resolution(self) -> int:
        """Render and mask resolution: SAM's input size."""
        return SAM_SPECS[self.config.sam].image_size

    @property
    def device(self) -> torch.device:
        return self.text_hidden_fcs[0].weight.device

    def contact_embeddings(self, last_hidden: torch.Tensor, emitted: torch.Tensor) -> torch.Tensor:
        """Γ of the hidden states that emitted a contact token: (B, L, h) and (B, L) bool -> (K, dim), row-major."""
        return self.text_hidden_fcs(last_hidden[emitted].to(self.text_hidden_fcs[0].weight.dtype))

    def encode_views(self, pixels: torch.Tensor) -> torch.Tensor:
        """Θ: (V, 3, S, S) SAM-normalised renders -> (V, C, s, s) image embeddings."""
        return self.sam.encode_images(pixels.to(self.device, self.text_hidden_fcs[0].weight.dtype))

    def localise(self, decoder: str, view_embeddings: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """Ω: (N, V, C, s, s) or shared (V, C, s, s) embeddings and (N, V, dim) prompts -> (N, V, S, S) logits."""
        count, views = prompts.shape[:2]
        if view_embeddings.dim() == 4:
            view_embeddings = view_embeddings[None].expand(count, *view_embeddings.shape)
        flat = view_embeddings.reshape(count * views, *view_embeddings.shape[2:])
        low_res = self.sam.decode(decoder, flat, prompts.reshape(count * views, 1, prompts.shape[-1]))
        return self.sam.upsample(low_res, self.resolution).view(count, views, self.resolution, self.resolution)


def emitting_positions(token_ids: torch.Tensor, seg_id: int) -> torch.Tensor:
    """(B, L) bool: the positions whose next token is ``seg_id`` (LISA's shifted ``seg_token_mask``)."""
    emitted = torch.zeros_like(token_ids, dtype=torch.bool)
    emitted[:, :-1] = token_ids[:, 1:] == seg_id
    return emitted


TRAINABLE_PREFIXES = ("vlm.language_model.lm_head.", "vlm.language_model.model.embed_tokens.", "text_hidden_fcs.",
                      "cam_pose_encoder.")


def is_trainable(name: str, decoders: tuple[str, ...]) -> bool:
    """The released recipe: LoRA adapters, lm_head, embed_tokens, Γ, Φ and SAM's mask decoder(s).
    Frozen: CLIP, the VLM projector, the base LM weights, SAM's image and prompt encoders."""
    if "lora_" in name:
        return True
    if name.startswith(TRAINABLE_PREFIXES):
        return True
    return any(name.startswith(f"sam.mask_decoders.{decoder}.") for decoder in decoders)


def set_trainable(model: InteractVLM) -> tuple[str, ...]:
    """Freeze everything but the released trainable set; returns exactly the names that train."""
    names = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_trainable(name, model.config.decoders))
        if parameter.requires_grad:
            names.append(name)
    return tuple(names)
