"""Released InteractVLM checkpoints: key conversion, loading and saving (REFERENCE.md section 1).

A released model is a merged Hugging Face folder (LoRA already merged, vision tower removed):

======================================  ==========================================
released key                            ours
======================================  ==========================================
``model.embed_tokens.*``                ``vlm.language_model.model.embed_tokens.*``
``model.layers.N.*``, ``model.norm.*``  ``vlm.language_model.model.layers.N.*``, ...
``lm_head.weight``                      ``vlm.language_model.lm_head.weight``
``model.mm_projector.*``                ``vlm.mm_projector.*``
``model.text_hidden_fcs.0.{0,2}.*``     ``text_hidden_fcs.{0,2}.*`` (Γ)
``cam_pose_encoder.*``                  ``cam_pose_encoder.*`` (Φ)
``model.visual_model.<sam key>``        ``sam.*`` through ``engine.contact.sam``'s segment_anything rules
``model.vision_tower.vision_tower.*``   ``vlm.vision_tower.*`` (only if a folder still holds it)
======================================  ==========================================

The CLIP vision tower comes from its own folder (``clip-vit-large-patch14``). Every key that maps
nowhere, and every parameter the folder lacks, is reported by name.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, CLIPVisionConfig, CLIPVisionModel

from engine.contact import sam as sam_io
from engine.contact.data import resolve_inside
from engine.contact.config import ContactModelConfig, LanguageSize, VisionSize, get_config
from engine.contact.lora import merged_state_dict
from engine.contact.model import InteractVLM
from engine.contact.sam import SAM_SPECS, load_state_dict_strict
from engine.contact.vlm import token_id
from engine.errors import InputError, MissingAssetError

SAM_PREFIX = "model.visual_model."
CLIP_PREFIX = "model.vision_tower.vision_tower."
_RULES = (  # (released prefix, our prefix); the first match wins, longest released prefixes first
    ("model.mm_projector.", "vlm.mm_projector."),
    ("model.text_hidden_fcs.0.", "text_hidden_fcs."),
    (CLIP_PREFIX, "vlm.vision_tower."),
    ("model.embed_tokens.", "vlm.language_model.model.embed_tokens."),
    ("model.layers.", "vlm.language_model.model.layers."),
    ("model.norm.", "vlm.language_model.model.norm."),
    ("lm_head.", "vlm.language_model.lm_head."),
    ("cam_pose_encoder.", "cam_pose_encoder."),
)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
CLIP_FOLDER = "clip-vit-large-patch14"


def _swap(name: str, rules) -> str | None:
    for source, target in rules:
        if name.startswith(source):
            return target + name[len(source):]
    return None


def released_to_ours(state: dict[str, torch.Tensor], decoders: tuple[str, ...]) -> tuple[dict, tuple[str, ...]]:
    """Convert a released state dict; returns (ours, unexpected released key names)."""
    ours, sam_state, unexpected = {}, {}, []
    for name, tensor in state.items():
        if name.startswith(SAM_PREFIX):
            sam_state[name[len(SAM_PREFIX):]] = tensor
        elif (target := _swap(name, _RULES)) is not None:
            ours[target] = tensor
        else:
            unexpected.append(name)
    converted = sam_io.from_segment_anything(sam_state, decoders=decoders)
    ours.update({f"sam.{name}": tensor for name, tensor in converted.items()})
    return ours, tuple(unexpected)


def ours_to_released(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse, without the vision tower (the released folders do not carry it)."""
    inverse = tuple((ours, released) for released, ours in _RULES if released != CLIP_PREFIX)
    released = {}
    sam_state = {name[len("sam."):]: tensor for name, tensor in state.items() if name.startswith("sam.")}
    for name, tensor in state.items():
        if name.startswith(("sam.", "vlm.vision_tower.")):
            continue
        target = _swap(name, inverse)
        if target is None:
            raise InputError(f"parameter {name!r} has no released key")
        released[target] = tensor
    released.update({SAM_PREFIX + name: tensor for name, tensor in sam_io.to_segment_anything(sam_state).items()})
    return released


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------

def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a HF folder: one file or an index of shards, safetensors preferred, ``.bin`` read weights-only."""
    present = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not present:
        raise MissingAssetError("InteractVLM weights", folder / WEIGHT_FILES[0],
                                f"the folder needs one of {', '.join(WEIGHT_FILES)}")
    name = present[0]
    if name.endswith(".index.json"):
        weight_map = json.loads((folder / name).read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    else:
        shards = [name]
    state = {}
    for shard in shards:
        path = resolve_inside(folder, shard, what=f"{folder} weight index")
        if not path.is_file():
            raise InputError(f"weight shard {shard!r} named by the index is missing from {folder}")
        state.update(load_file(str(path)) if shard.endswith(".safetensors") else sam_io.read_torch_weights(path))
    return state


def write_weights(state: dict[str, torch.Tensor], folder: Path, shard_bytes: int = 4 * 1024 ** 3) -> None:
    """safetensors shards of at most ``shard_bytes`` (+ the index when there are several)."""
    shards, current, size = [], {}, 0
    for name in sorted(state):
        tensor = state[name].detach().contiguous().clone()
        if current and size + tensor.nbytes > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name], size = tensor, size + tensor.nbytes
    shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for index, shard in enumerate(shards, 1):
        file = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}, indent=1))


# --------------------------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------------------------
STUDIO_KEY = "interaction_studio"  # our additions; released folders lack it and get the released defaults


def config_json(config: ContactModelConfig, token_ids: dict[str, int]) -> dict:
    """A released-style ``config.json``: the Llama fields plus InteractVLM's and ours."""
    from engine.contact.vlm import llama_config

    data = llama_config(config.language).to_dict()
    data.update(architectures=["InteractVLMForCausalLM"], token_type=" ".join(config.seg_tokens),
                seg_token_idx=token_ids[config.seg_tokens[0]], multiview_cam_cond=True, cam_encoder_type="featlift",
                img_emb_len=config.vision.num_patches, mm_use_im_start_end=config.use_im_start_end,
                mm_hidden_size=config.vision.hidden, mm_vision_select_layer=config.vision.select_layer,
                out_dim=SAM_SPECS[config.sam].output_channels)
    data[STUDIO_KEY] = {"preset": config.name, "sam": config.sam, "camera_hidden": config.camera_hidden,
                        "num_views": config.num_views, "max_new_tokens": config.max_new_tokens, "token_ids": token_ids}
    return data


def _field(data: dict, name: str, folder: Path):
    if name not in data:
        raise InputError(f"{folder / 'config.json'} lacks the field {name!r}; is this an InteractVLM folder?")
    return data[name]


def language_size(data: dict, folder: Path) -> LanguageSize:
    heads = _field(data, "num_attention_heads", folder)
    return LanguageSize(hidden=_field(data, "hidden_size", folder), layers=_field(data, "num_hidden_layers", folder),
                        heads=heads, kv_heads=data.get("num_key_value_heads") or heads,
                        intermediate=_field(data, "intermediate_size", folder),
                        vocab_size=_field(data, "vocab_size", folder),
                        max_positions=data.get("max_position_embeddings", 4096), rms_eps=data.get("rms_norm_eps", 1e-5))


def vision_size(clip_folder: Path, select_layer: int) -> VisionSize:
    if not (clip_folder / "config.json").is_file():
        raise MissingAssetError("CLIP ViT-L/14 vision folder", clip_folder,
                                "put the openai/clip-vit-large-patch14 folder (config.json + weights) there")
    clip = CLIPVisionConfig.from_pretrained(clip_folder, local_files_only=True)
    return VisionSize(hidden=clip.hidden_size, layers=clip.num_hidden_layers, heads=clip.num_attention_heads,
                      intermediate=clip.intermediate_size, image_size=clip.image_size, patch_size=clip.patch_size,
                      select_layer=select_layer)


def read_config(folder: Path, clip_folder: Path, preset: str | None = None) -> ContactModelConfig:
    """The variant a released folder holds: sizes from its config.json and the CLIP folder's."""
    data = json.loads((folder / "config.json").read_text())
    studio = data.get(STUDIO_KEY, {})
    name = preset or studio.get("preset") or folder.name
    base = get_config(name)
    return replace(base, language=language_size(data, folder), vision=vision_size(clip_folder, data.get("mm_vision_select_layer", -2)),
                   sam=studio.get("sam", "vit_h"), camera_hidden=studio.get("camera_hidden", base.camera_hidden),
                   use_im_start_end=data.get("mm_use_im_start_end", base.use_im_start_end),
                   max_new_tokens=studio.get("max_new_tokens", base.max_new_tokens))


# --------------------------------------------------------------------------------------------------------------
# Loading and saving
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference: ``name`` is the folder's name, shown as the result's source."""

    model: InteractVLM
    tokenizer: object
    name: str
    token_ids: dict


def check_quantisation(bits: int | None) -> None:
    if bits is None:
        return
    if bits not in (4, 8):
        raise InputError(f"quantisation must be 4 or 8 bits, got {bits}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InputError(f"{bits}-bit loading needs the bitsandbytes package, which is not installed here; "
                         "install it on a CUDA machine, or load in bf16/fp16/fp32")


def load_interactvlm(folder: Path | str, clip_folder: Path | str, *, preset: str | None = None, dtype: str = "bf16",
                     device: torch.device | str = "cpu", bits: int | None = None) -> LoadedModel:
    """A released merged folder (plus the CLIP vision folder) -> an eval-mode model on ``device``.

    Parameters are never randomly initialised: the module is built with meta parameters and adopts the
    checkpoint's tensors, so a 13B model needs only its own memory. Raises MissingAssetError for absent
    folders, CheckpointMismatch naming every missing, unexpected or wrongly shaped key.
    """
    folder, clip_folder = Path(folder), Path(clip_folder)
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    check_quantisation(bits)
    if not (folder / "config.json").is_file():
        raise MissingAssetError("InteractVLM checkpoint folder", folder, "see the README's model table")
    config = read_config(folder, clip_folder, preset)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    token_ids = {token: token_id(tokenizer, token) for token in config.seg_tokens}
    state, unexpected = released_to_ours(read_weights(folder), config.decoders)
    if not any(name.startswith("vlm.vision_tower.") for name in state):
        state.update(clip_state(clip_folder))
    state.update({name: torch.empty(0) for name in unexpected})  # reported by their released names
    with init_empty_weights(include_buffers=False):
        model = InteractVLM(config)
    cast = {name: tensor.to(device=device, dtype=DTYPES[dtype]) if tensor.is_floating_point() else tensor.to(device)
            for name, tensor in state.items()}
    load_state_dict_strict(model, cast, f"InteractVLM checkpoint {folder}", assign=True, display=released_name)
    model.to(device).eval()
    if bits is not None:
        from engine.contact.quantise import quantise_language_model

        quantise_language_model(model, bits)
    return LoadedModel(model, tokenizer, folder.name, token_ids)


def clip_state(clip_folder: Path) -> dict[str, torch.Tensor]:
    tower = CLIPVisionModel.from_pretrained(clip_folder, local_files_only=True)
    return {f"vlm.vision_tower.{name}": tensor for name, tensor in tower.state_dict().items()}


def released_name(name: str) -> str:
    """Our parameter name as the released folder spells it (for error messages)."""
    if name.startswith("sam."):
        return SAM_PREFIX + (sam_io.ours_key_to_sa(name[len("sam."):]) or name)
    if name.startswith("vlm.vision_tower."):
        return f"{name} (from the CLIP folder)"
    inverse = tuple((ours, released) for released, ours in _RULES)
    return _swap(name, inverse) or name


def save_released(model: InteractVLM, tokenizer, folder: Path | str, *, dtype: str = "bf16",
                  clip_folder: Path | str | None = None) -> Path:
    """Write a released-layout merged folder (LoRA merged, no vision tower); optionally the CLIP folder too."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = ours_to_released(merged_state_dict(model))
    write_weights({name: tensor.to(DTYPES[dtype]) if tensor.is_floating_point() else tensor
                   for name, tensor in state.items()}, folder)
    token_ids = {token: token_id(tokenizer, token) for token in model.config.seg_tokens}
    (folder / "config.json").write_text(json.dumps(config_json(model.config, token_ids), indent=1))
    tokenizer.save_pretrained(folder)
    if clip_folder is not None:
        model.vlm.vision_tower.save_pretrained(Path(clip_folder))
    return folder


def new_model(preset: str, tokenizer=None, *, seed: int = 0) -> tuple[InteractVLM, object]:
    """A freshly initialised (seeded) model and its tokenizer with the contact tokens added.

    ``tiny-*`` presets get the studio's word tokenizer; released-size presets need the Llama tokenizer
    of the base model (pass it). Used by training from scratch and by the tests.
    """
    from engine.contact.tokenizer import word_tokenizer
    from engine.contact.vlm import add_contact_tokens

    if tokenizer is None:
        if not preset.startswith("tiny"):
            raise InputError(f"preset {preset!r} needs the base model's Llama tokenizer")
        tokenizer = word_tokenizer()
    config = get_config(preset)
    add_contact_tokens(tokenizer, config)
    config = get_config(preset, vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    return InteractVLM(config).eval(), tokenizer
