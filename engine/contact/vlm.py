"""The LLaVA v1 vision-language model of InteractVLM, assembled from ``transformers`` classes.

CLIP vision tower (frozen) -> layer ``select_layer`` patch features -> ``mm_projector`` (one Linear) ->
spliced into the Llama input embeddings where the prompt holds ``<image>`` (``IMAGE_TOKEN_INDEX``).
"""
from __future__ import annotations

from dataclasses import dataclass

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from engine.contact.config import ContactModelConfig, LanguageSize, VisionSize
from engine.contact.prompts import IMAGE_END, IMAGE_START, IMAGE_TOKEN
from engine.errors import InputError

IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_config(size: VisionSize) -> CLIPVisionConfig:
    return CLIPVisionConfig(hidden_size=size.hidden, num_hidden_layers=size.layers, num_attention_heads=size.heads,
                            intermediate_size=size.intermediate, image_size=size.image_size,
                            patch_size=size.patch_size, projection_dim=size.hidden, hidden_act="quick_gelu")


def llama_config(size: LanguageSize) -> LlamaConfig:
    return LlamaConfig(vocab_size=size.vocab_size, hidden_size=size.hidden, num_hidden_layers=size.layers,
                       num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
                       intermediate_size=size.intermediate, max_position_embeddings=size.max_positions,
                       rms_norm_eps=size.rms_eps, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def _processor_class():
    """CLIP's PIL image processor (current transformers names it ``CLIPImageProcessorPil``; without
    torchvision ``CLIPImageProcessor`` resolves to it anyway)."""
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
        return CLIPImageProcessorPil
    except ImportError:  # transformers releases before the PIL/torchvision split
        from transformers import CLIPImageProcessor
        return CLIPImageProcessor


def clip_processor(folder: Path | str | None, size: int):
    """transformers' CLIP image processor, configured from the CLIP folder's ``preprocessor_config.json``
    (the release's preprocessing: shortest side to ``size`` with the other side truncated, PIL bicubic,
    centre crop, CLIP mean/std). Without a folder (a model initialised here): the same settings at ``size``."""
    cls = _processor_class()
    if folder is not None and (Path(folder) / "preprocessor_config.json").is_file():
        return cls.from_pretrained(str(folder), local_files_only=True)
    return cls(do_resize=True, size={"shortest_edge": size}, resample=3, do_center_crop=True,
               crop_size={"height": size, "width": size}, do_rescale=True, rescale_factor=1 / 255,
               do_normalize=True, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), do_convert_rgb=True)


def clip_pixels(image: np.ndarray, processor) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, S, S) float32 through the CLIP image processor."""
    return processor(images=Image.fromarray(np.ascontiguousarray(image)), return_tensors="pt")["pixel_values"][0]


def tokenize_with_image(tokenizer, prompt: str) -> list[int]:
    """LLaVA's ``tokenizer_image_token``: BOS + text with ``IMAGE_TOKEN_INDEX`` where ``<image>`` stood."""
    chunks = prompt.split(IMAGE_TOKEN)
    if len(chunks) != 2:
        raise InputError("a prompt must hold exactly one <image> placeholder")
    first = tokenizer(chunks[0], add_special_tokens=False).input_ids
    rest = tokenizer(chunks[1], add_special_tokens=False).input_ids
    return [tokenizer.bos_token_id] + first + [IMAGE_TOKEN_INDEX] + rest


def add_contact_tokens(tokenizer, config: ContactModelConfig) -> None:
    """Add the tokens in the release's order, so that ids match its: LISA's ``[SEG]``, ``<im_start>``,
    ``<im_end>`` (32000-32002 on Llama-2), then InteractVLM's ``[HSEG]``, ``[OSEG]`` (32003, 32004). Pad
    with ``<unk>`` as LISA does."""
    tokenizer.add_tokens(["[SEG]"])
    if config.use_im_start_end:
        tokenizer.add_tokens([IMAGE_START, IMAGE_END], special_tokens=True)
    tokenizer.add_tokens([token for token in config.seg_tokens if token != "[SEG]"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token


def token_id(tokenizer, token: str) -> int:
    ids = tokenizer(token, add_special_tokens=False).input_ids
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise InputError(f"the tokenizer has no single token {token!r}; is this an InteractVLM tokenizer?")
    return ids[0]


@dataclass(frozen=True)
class EmbeddedBatch:
    """A padded batch of prompts with the image features spliced in.

    embeds: (B, L, hidden). attention_mask: (B, L) long. token_ids: (B, L) ids, ``IMAGE_TOKEN_INDEX`` at
    image positions and ``pad`` at padding. labels: (B, L) targets or ``IGNORE_INDEX`` (None at inference).
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    token_ids: torch.Tensor
    labels: torch.Tensor | None


class LlavaVLM(torch.nn.Module):
    """CLIP + projector + Llama. Parameter names: ``vision_tower.*``, ``mm_projector.*``, ``language_model.*``."""

    def __init__(self, config: ContactModelConfig):
        super().__init__()
        self.select_layer = config.vision.select_layer
        self.vision_tower = CLIPVisionModel(clip_config(config.vision))
        self.mm_projector = torch.nn.Linear(config.vision.hidden, config.language.hidden)
        self.language_model = LlamaForCausalLM(llama_config(config.language))

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) CLIP pixels -> (B, patches, hidden) projected patch features."""
        tower = self.vision_tower
        pixels = pixels.to(device=self.mm_projector.weight.device, dtype=tower.dtype)
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[self.select_layer][:, 1:]
        return self.mm_projector(hidden.to(self.mm_projector.weight.dtype))

    def embed(self, sequences: list[list[int]], image_features: torch.Tensor, *, labels=None,
              pad_id: int, left_pad: bool) -> EmbeddedBatch:
        """Splice each sequence's image features in and pad (left for generation, right for training)."""
        table = self.language_model.get_input_embeddings()
        rows = [self._splice(ids, features, table) for ids, features in zip(sequences, image_features)]
        label_rows = None if labels is None else [self._splice_labels(ids, lab, image_features.shape[1])
                                                  for ids, lab in zip(sequences, labels)]
        return _pad(rows, label_rows, pad_id, left_pad, table.weight)

    @staticmethod
    def _splice(ids: list[int], features: torch.Tensor, table) -> tuple[torch.Tensor, torch.Tensor]:
        where = ids.index(IMAGE_TOKEN_INDEX)
        device = table.weight.device
        before = table(torch.tensor(ids[:where], device=device))
        after = table(torch.tensor(ids[where + 1:], device=device))
        embeds = torch.cat([before, features.to(before.dtype), after])
        token_ids = torch.tensor(ids[:where] + [IMAGE_TOKEN_INDEX] * features.shape[0] + ids[where + 1:], device=device)
        return embeds, token_ids

    @staticmethod
    def _splice_labels(ids: list[int], labels: list[int], num_patches: int) -> list[int]:
        where = ids.index(IMAGE_TOKEN_INDEX)
        return labels[:where] + [IGNORE_INDEX] * num_patches + labels[where + 1:]


def _pad(rows, label_rows, pad_id: int, left_pad: bool, weight: torch.Tensor) -> EmbeddedBatch:
    length = max(embeds.shape[0] for embeds, _ in rows)
    batch = len(rows)
    embeds = weight.new_zeros(batch, length, weight.shape[1])
    token_ids = torch.full((batch, length), pad_id, dtype=torch.long, device=weight.device)
    mask = torch.zeros(batch, length, dtype=torch.long, device=weight.device)
    labels = None if label_rows is None else torch.full_like(token_ids, IGNORE_INDEX)
    for row, (row_embeds, row_ids) in enumerate(rows):
        span = slice(length - row_ids.shape[0], length) if left_pad else slice(0, row_ids.shape[0])
        embeds[row, span], token_ids[row, span], mask[row, span] = row_embeds, row_ids, 1
        if labels is not None:
            labels[row, span] = torch.tensor(label_rows[row], device=weight.device)
    return EmbeddedBatch(embeds, mask, token_ids, labels)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding (what ``generate`` computes itself)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)
