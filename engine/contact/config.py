"""Model variants of InteractVLM: one config dataclass, presets for the released variants and a tiny shrink.

The released variants (REFERENCE.md section 1) share one architecture: CLIP ViT-L/14 (224 px) + a
``Linear(1024 -> 5120)`` projector + Llama-2 13B, Γ, Φ and SAM ViT-H. The release's ``token_type`` decides
the contact tokens, and with them the splitter and the decoders:

==========================  ================================  ================  ===========================
token_type                  tokens added (in this order)      attention_splitter SAM mask decoders
==========================  ================================  ================  ===========================
``Gen``                     ``[SEG]``                          no                ``mask_decoder``
``Gen-Hu-Obj``              ``[SEG]``, ``[HSEG]``, ``[OSEG]``  yes               ``mask_decoder``
``...-DifDe``               as above                           as above          + ``human_``/``object_mask_decoder``
==========================  ================================  ================  ===========================

Presets: ``hcontact`` (Gen, human contact), ``oafford`` (Gen, object affordance), ``joint`` (Gen-Hu-Obj,
both: ``[HSEG]`` answers human questions and ``[OSEG]`` object ones). The first contact token of an
answer routes its embeddings: ``[HSEG]`` through the splitter's human branch, ``[OSEG]`` through its
object branch, ``[SEG]`` past the splitter; every route ends in the same ``mask_decoder`` (DifDe configs:
the target's own decoder). No released config uses DifDe; ``Gen-Int`` (``[ISEG]``) is refused.
``shrink`` turns any preset into a seeded-test-sized model of the same architecture ("tiny-<preset>";
``tiny`` is tiny-hcontact).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from engine.errors import InputError


@dataclass(frozen=True)
class VisionSize:
    """CLIP vision tower. The LLaVA v1 image features are layer ``select_layer``'s patch tokens (no CLS)."""

    hidden: int = 1024
    layers: int = 24
    heads: int = 16
    intermediate: int = 4096
    image_size: int = 224
    patch_size: int = 14
    select_layer: int = -2

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class LanguageSize:
    """Llama language model; ``vocab_size`` is the base vocabulary before the added tokens."""

    hidden: int = 5120
    layers: int = 40
    heads: int = 40
    kv_heads: int = 40
    intermediate: int = 13824
    vocab_size: int = 32000
    max_positions: int = 4096
    rms_eps: float = 1e-5


@dataclass(frozen=True)
class ContactModelConfig:
    """One InteractVLM variant.

    targets: what the model predicts: ("human",), ("object",) or ("human", "object").
    token_type: the release's token type (module docstring); it decides tokens, splitter and decoders.
    human_view_type, object_view_type: the release's ``hC_sam_view_type``/``oC_sam_view_type`` (written back
        to config.json; the views themselves are ``engine.rll``'s presets).
    sam: a ``engine.contact.sam.SAM_SPECS`` name. Its image size is also the render resolution of the
        views (1024 for the released models) and its output channels the prompt dimension (256).
    camera_hidden: width of Φ's shared MLP. lora_*: the released LoRA settings (LM q/v projections).
    use_im_start_end: LLaVA's ``<im_start><image><im_end>`` wrapping of the image tokens.
    """

    name: str
    targets: tuple[str, ...]
    token_type: str = "Gen"
    human_view_type: str | None = None
    object_view_type: str | None = None
    vision: VisionSize = VisionSize()
    language: LanguageSize = LanguageSize()
    sam: str = "vit_h"
    num_views: int = 4
    camera_hidden: int = 128
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    use_im_start_end: bool = True
    max_new_tokens: int = 64

    def __post_init__(self):
        if self.base_token_type not in TOKEN_TYPES:
            raise InputError(f"config {self.name!r}: token_type {self.token_type!r} is not supported; "
                             f"InteractVLM's released configs use {sorted(TOKEN_TYPES)} (optionally with -DifDe)")
        if not self.targets or set(self.targets) - {"human", "object"}:
            raise InputError(f"config {self.name!r}: targets must be 'human' and/or 'object', got {self.targets}")

    @property
    def base_token_type(self) -> str:
        return self.token_type.replace("-DifDe", "")

    @property
    def seg_tokens(self) -> tuple[str, ...]:
        """The contact tokens the release adds for this token type, in its order."""
        return TOKEN_TYPES[self.base_token_type]

    @property
    def uses_splitter(self) -> bool:
        return self.base_token_type == "Gen-Hu-Obj"

    @property
    def decoders(self) -> tuple[str, ...]:
        if "DifDe" in self.token_type:
            return ("mask_decoder", "human_mask_decoder", "object_mask_decoder")
        return ("mask_decoder",)

    @property
    def token_for(self) -> dict[str, str]:
        """target ("human"/"object") -> the contact token its answers carry."""
        if self.uses_splitter:
            return {"human": "[HSEG]", "object": "[OSEG]"}
        return {"human": "[SEG]", "object": "[SEG]"}

    @property
    def decoder_for(self) -> dict[str, str]:
        """target -> the mask decoder that localises it."""
        if "DifDe" in self.token_type:
            return {"human": "human_mask_decoder", "object": "object_mask_decoder"}
        return {"human": "mask_decoder", "object": "mask_decoder"}


TOKEN_TYPES = {"Gen": ("[SEG]",), "Gen-Hu-Obj": ("[SEG]", "[HSEG]", "[OSEG]")}
HUMAN_VIEW_TYPE, OBJECT_VIEW_TYPE = "4MV-Z_Vitru", "4MV-Z_HM_BM"


PRESETS: dict[str, ContactModelConfig] = {
    "hcontact": ContactModelConfig("hcontact", ("human",), "Gen", human_view_type=HUMAN_VIEW_TYPE),
    "oafford": ContactModelConfig("oafford", ("object",), "Gen", object_view_type=OBJECT_VIEW_TYPE),
    "joint": ContactModelConfig("joint", ("human", "object"), "Gen-Hu-Obj", human_view_type=HUMAN_VIEW_TYPE,
                                object_view_type=OBJECT_VIEW_TYPE),
}
TINY_VISION = VisionSize(hidden=32, layers=2, heads=2, intermediate=64, image_size=28, patch_size=14)
TINY_LANGUAGE = LanguageSize(hidden=64, layers=2, heads=4, kv_heads=4, intermediate=128, vocab_size=0,
                             max_positions=512)


def shrink(config: ContactModelConfig, vocab_size: int) -> ContactModelConfig:
    """The same variant at test size: 2-layer CLIP and Llama, the tiny SAM, 32-wide Φ."""
    return replace(config, name=f"tiny-{config.name}", vision=TINY_VISION,
                   language=replace(TINY_LANGUAGE, vocab_size=vocab_size), sam="tiny", camera_hidden=32,
                   max_new_tokens=12)


def get_config(name: str, vocab_size: int = 32000) -> ContactModelConfig:
    """A released preset by name, or ``tiny-<preset>`` (``tiny`` = ``tiny-hcontact``) for tests and CPU training."""
    base = name.removeprefix("tiny-") if name != "tiny" else "hcontact"
    if base not in PRESETS:
        known = sorted(PRESETS) + ["tiny"] + [f"tiny-{preset}" for preset in sorted(PRESETS)]
        raise InputError(f"unknown model preset {name!r}; choose one of {known}")
    if name.startswith("tiny"):
        return shrink(PRESETS[base], vocab_size)
    return replace(PRESETS[base], language=replace(PRESETS[base].language, vocab_size=vocab_size))
