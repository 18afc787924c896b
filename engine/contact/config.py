"""Model variants of InteractVLM: one config dataclass, presets for the released variants and a tiny shrink.

The released variants (REFERENCE.md section 1) share one architecture: CLIP ViT-L/14 (224 px) + a
``Linear(1024 -> 5120)`` projector + Llama-2 13B, Γ, Φ and SAM ViT-H. They differ in the contact
tokens and the mask decoders:

============  ===========  ======================  =============================================
preset        target       tokens                  SAM mask decoders (token -> decoder)
============  ===========  ======================  =============================================
hcontact      human body   ``[SEG]``               ``mask_decoder``
oafford       object       ``[SEG]``               ``mask_decoder``
joint         both         ``[HSEG]``, ``[OSEG]``  ``human_mask_decoder``, ``object_mask_decoder``
============  ===========  ======================  =============================================

The joint checkpoint also carries the single-task ``mask_decoder``; we keep it so that the released
file loads strictly, and route the two tokens to their own decoders. ``shrink`` turns any preset into a
seeded-test-sized model of the same architecture ("tiny-<preset>"; ``tiny`` is tiny-hcontact).
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

    targets: what each contact token localises, aligned with ``seg_tokens`` ("human" or "object").
    decoders: every SAM mask decoder in the checkpoint; ``routes`` maps each token to its decoder.
    sam: a ``engine.contact.sam.SAM_SPECS`` name. Its image size is also the render resolution of the
        views (1024 for the released models) and its output channels the prompt dimension (256).
    camera_hidden: width of Φ's shared MLP. lora_*: the released LoRA settings (LM q/v projections).
    use_im_start_end: LLaVA's ``<im_start><image><im_end>`` wrapping of the image tokens.
    """

    name: str
    seg_tokens: tuple[str, ...]
    targets: tuple[str, ...]
    decoders: tuple[str, ...]
    routes: tuple[str, ...]
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
        if not (len(self.seg_tokens) == len(self.targets) == len(self.routes)) or not self.seg_tokens:
            raise InputError(f"config {self.name!r}: seg_tokens, targets and routes must align")
        if set(self.targets) - {"human", "object"} or set(self.routes) - set(self.decoders):
            raise InputError(f"config {self.name!r}: unknown target or a route to a missing decoder")

    @property
    def token_for(self) -> dict[str, str]:
        """target ("human"/"object") -> its contact token."""
        return dict(zip(self.targets, self.seg_tokens))

    @property
    def decoder_for(self) -> dict[str, str]:
        """target -> the mask decoder that localises it."""
        return dict(zip(self.targets, self.routes))


PRESETS: dict[str, ContactModelConfig] = {
    "hcontact": ContactModelConfig("hcontact", ("[SEG]",), ("human",), ("mask_decoder",), ("mask_decoder",)),
    "oafford": ContactModelConfig("oafford", ("[SEG]",), ("object",), ("mask_decoder",), ("mask_decoder",)),
    "joint": ContactModelConfig("joint", ("[HSEG]", "[OSEG]"), ("human", "object"),
                                ("mask_decoder", "human_mask_decoder", "object_mask_decoder"),
                                ("human_mask_decoder", "object_mask_decoder")),
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
