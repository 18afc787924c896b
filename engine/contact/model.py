"""InteractVLM's network (REFERENCE.md section 1): VLM Ψ, projection Γ, camera lift Φ and MV-Loc.

Stages of one prediction, in the paper's symbols:
1. Ψ reads the image and the prompt and emits the contact token(s) ``[SEG]`` (or ``[HSEG]``/``[OSEG]``).
2. Γ maps the last hidden state that emitted each token to a prompt embedding E (``prompt_dim``).
3. Φ makes E view-aware: E_v = E * sigmoid(T_v(MLP(k_v))) with k_v the view's camera parameters.
   Joint model: the answer's first contact token routes (E_1..E_V) through the attention splitter's
   human (``[HSEG]``) or object (``[OSEG]``) branch, which attends across the V views.
4. MV-Loc: SAM's encoder Θ embeds each render. The V view-aware embeddings of one token form ONE
   (1, V, C) sparse prompt that SAM's decoder broadcasts over the V image embeddings, as the release
   does: each view's mask is decoded with all V tokens. One mask per view, upsampled to the render size.
   Every contact token of an answer gives its own V masks.
5. ``engine.rll`` lifts the masks to the 3D vertices (outside this module).

Parameter names follow ours: ``vlm.*``, ``sam.*``, ``text_hidden_fcs.*`` (Γ), ``cam_pose_encoder.*``
(Φ), ``attention_splitter.*``; ``engine.contact.checkpoint`` maps them to the released layout.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.contact.config import ContactModelConfig
from engine.contact.sam import SAM_SPECS, SamParts
from engine.contact.vlm import LlavaVLM
from engine.errors import InputError

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


class AttentionSplitter(nn.Module):
    """The joint model's splitter (release ``AttentionSplitter``, C -> C/2 -> C; 6 biased Linears).

    ``h = input_proj(x)``; ``k, v = key(h), value(h)``; each branch is
    ``output_proj(softmax(q k^T / sqrt(C/2)) v)`` with ``q = query_human(h)`` or ``query_object(h)``,
    attending over the V views of ``x`` (..., V, C).
    """

    def __init__(self, dim: int):
        super().__init__()
        hidden = dim // 2
        self.input_proj = nn.Linear(dim, hidden)
        self.query_human = nn.Linear(hidden, hidden)
        self.query_object = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.output_proj = nn.Linear(hidden, dim)

    def branch(self, x: torch.Tensor, target: str) -> torch.Tensor:
        """(..., V, C) -> (..., V, C) through the "human" or "object" branch."""
        h = self.input_proj(x)
        query = (self.query_human if target == "human" else self.query_object)(h)
        key = self.key(h)
        weights = torch.softmax(query @ key.transpose(-2, -1) / key.shape[-1] ** 0.5, dim=-1)
        return self.output_proj(weights @ self.value(h))


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
        if config.uses_splitter:
            self.attention_splitter = AttentionSplitter(spec.output_channels)

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

    def route(self, gated: torch.Tensor, route: str | None) -> torch.Tensor:
        """(N, V, C) gated embeddings through the splitter's ``route`` branch ("human"/"object"), or as they
        are (``None``: a ``[SEG]`` token, or a model without a splitter)."""
        if route is None:
            return gated
        if not self.config.uses_splitter:
            raise InputError(f"the {self.config.name} model has no attention splitter to route {route!r} through")
        return self.attention_splitter.branch(gated.to(self.attention_splitter.input_proj.weight.dtype), route)

    def localise(self, decoder: str, view_embeddings: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """Ω: (N, V, C, s, s) or shared (V, C, s, s) embeddings and (N, V, dim) prompts -> (N, V, S, S) logits.

        Prompt n's V tokens are the sparse prompt of every one of its V views (SAM broadcasts the release's
        (1, V, C) prompt over the V image embeddings), so view v's mask sees all V tokens."""
        count, views = prompts.shape[:2]
        if view_embeddings.dim() == 4:
            view_embeddings = view_embeddings[None].expand(count, *view_embeddings.shape)
        flat = view_embeddings.reshape(count * views, *view_embeddings.shape[2:])
        tokens = prompts[:, None].expand(count, views, views, prompts.shape[-1]).reshape(count * views, views, -1)
        low_res = self.sam.decode(decoder, flat, tokens)
        return self.sam.upsample(low_res, self.resolution).view(count, views, self.resolution, self.resolution)


def emitting_positions(token_ids: torch.Tensor, seg_ids) -> torch.Tensor:
    """(B, L) bool: the positions whose next token is one of ``seg_ids`` (LISA's shifted ``seg_token_mask``)."""
    seg_ids = torch.as_tensor(seg_ids if isinstance(seg_ids, (list, tuple)) else [seg_ids], device=token_ids.device)
    emitted = torch.zeros_like(token_ids, dtype=torch.bool)
    emitted[:, :-1] = torch.isin(token_ids[:, 1:], seg_ids)
    return emitted


def route_for(first_token: str, config: ContactModelConfig) -> str | None:
    """The splitter branch an answer takes, from its FIRST contact token (release ``process_embeddings``)."""
    if not config.uses_splitter:
        return None
    return {"[HSEG]": "human", "[OSEG]": "object"}.get(first_token)


TRAINABLE_PREFIXES = ("vlm.language_model.lm_head.", "vlm.language_model.model.embed_tokens.", "text_hidden_fcs.",
                      "cam_pose_encoder.", "attention_splitter.")


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
