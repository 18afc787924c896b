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
``attention_splitter.*``                ``attention_splitter.*`` (joint model, 12 tensors)
``model.visual_model.<sam key>``        ``sam.*`` through ``engine.contact.sam``'s segment_anything rules
``model.vision_tower.vision_tower.*``   ``vlm.vision_tower.*`` (only if a folder still holds it)
``model.layers.N.self_attn.rotary_emb.inv_freq``  checked, not loaded (see below)
======================================  ==========================================

Files, as transformers 4.31 + peft 0.4 (the release's merge script) write them:
``pytorch_model-0000k-of-0000n.bin`` shards (plain ``{name: tensor}`` pickles, read weights-only: no other
object is ever unpickled) with ``pytorch_model.bin.index.json``, ``config.json`` (model_type ``llava``),
``generation_config.json`` and the slow Llama tokenizer's ``tokenizer.model``, ``tokenizer_config.json``,
``special_tokens_map.json`` and ``added_tokens.json``. safetensors folders are read too.

4.31 kept each layer's rotary ``inv_freq`` as a persistent buffer, so every released file holds 40 of them
(at 13B). Our Llama computes them; the loader checks that each saved one equals ours for the config (after
rounding to the file's dtype) and names any that differ. Apart from those, every key that maps nowhere,
and every parameter the folder lacks, is reported by name.

The variant comes from ``config.json`` (``token_type``, ``seg/hseg/oseg_token_idx``, ``cam_encoder_type``,
``multiview_*``, ``img_emb_len``, ``out_dim``, the view types and loss weights), never from the folder's name.
The CLIP vision tower comes from its own folder (``clip-vit-large-patch14``).
"""
from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file
from transformers import CLIPVisionConfig, CLIPVisionModel, PreTrainedTokenizerFast

from engine.contact import sam as sam_io
from engine.contact.data import resolve_inside
from engine.contact.config import TOKEN_TYPES, ContactModelConfig, LanguageSize, VisionSize, get_config
from engine.contact.lora import merged_state_dict
from engine.contact.model import InteractVLM
from engine.contact.sam import SAM_SPECS, load_state_dict_strict
from engine.contact.vlm import clip_processor, token_id
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
    ("attention_splitter.", "attention_splitter."),
)
ROTARY = re.compile(r"model\.layers\.(\d+)\.self_attn\.rotary_emb\.inv_freq")
ROPE_BASE = 10000.0  # Llama-2; 4.31 had no rope_theta field
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
WEIGHT_FILES = ("pytorch_model.bin.index.json", "pytorch_model.bin", "model.safetensors.index.json", "model.safetensors")
BIN_INDEX = "pytorch_model.bin.index.json"
CLIP_FOLDER = "clip-vit-large-patch14"


def _swap(name: str, rules) -> str | None:
    for source, target in rules:
        if name.startswith(source):
            return target + name[len(source):]
    return None


def rotary_inv_freq(config: ContactModelConfig) -> torch.Tensor:
    """(head_dim / 2,) float32: ``1 / base^(2i / head_dim)``, as 4.31's LlamaRotaryEmbedding stored it."""
    head_dim = config.language.hidden // config.language.heads
    return 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2).float() / head_dim))


def check_rotary(rotary: dict[str, torch.Tensor], config: ContactModelConfig) -> tuple[str, ...]:
    """The saved ``inv_freq`` buffers, checked; returns the names of those that do not belong (a layer the
    config lacks). Raises InputError naming every buffer whose values differ from the config's."""
    expected = rotary_inv_freq(config)
    unexpected, wrong = [], []
    for name, tensor in sorted(rotary.items()):
        if int(ROTARY.fullmatch(name).group(1)) >= config.language.layers:
            unexpected.append(name)
        elif tensor.is_meta:
            continue
        elif tensor.shape != expected.shape or not torch.equal(tensor.float(), expected.to(tensor.dtype).float()):
            wrong.append(name)
    if wrong:
        raise InputError(f"{len(wrong)} rotary buffers differ from the config's (head dim "
                         f"{config.language.hidden // config.language.heads}, base {ROPE_BASE:g}): {', '.join(wrong[:10])}"
                         f"{' ...' if len(wrong) > 10 else ''}; the checkpoint was made for a different Llama")
    return tuple(unexpected)


def released_to_ours(state: dict[str, torch.Tensor], decoders: tuple[str, ...]) -> tuple[dict, tuple[str, ...]]:
    """Convert a released state dict; returns (ours, unexpected released key names). The rotary buffers are
    returned under their released names (``split_rotary`` takes them out for ``check_rotary``)."""
    ours, sam_state, unexpected = {}, {}, []
    for name, tensor in state.items():
        if ROTARY.fullmatch(name):
            ours[name] = tensor
        elif name.startswith(SAM_PREFIX):
            sam_state[name[len(SAM_PREFIX):]] = tensor
        elif (target := _swap(name, _RULES)) is not None:
            ours[target] = tensor
        else:
            unexpected.append(name)
    converted = sam_io.from_segment_anything(sam_state, decoders=decoders)
    ours.update({f"sam.{name}": tensor for name, tensor in converted.items()})
    return ours, tuple(unexpected)


def split_rotary(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(everything else, the rotary buffers)."""
    rotary = {name: tensor for name, tensor in state.items() if ROTARY.fullmatch(name)}
    return {name: tensor for name, tensor in state.items() if name not in rotary}, rotary


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


def released_state(state: dict[str, torch.Tensor], config: ContactModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict (no LoRA) as a released file holds it: renamed, plus the per-layer rotary buffers."""
    released = ours_to_released(state)
    reference = next(iter(state.values()))
    inv_freq = rotary_inv_freq(config)
    for layer in range(config.language.layers):
        name = f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"
        released[name] = inv_freq.to(reference.device if not reference.is_meta else "meta")
    return released


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------

def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a HF folder: an index of shards or one file; ``.bin`` read weights-only."""
    present = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not present:
        raise MissingAssetError("InteractVLM weights", folder / BIN_INDEX,
                                f"the folder needs one of {', '.join(WEIGHT_FILES)}")
    name = present[0]
    if name.endswith(".index.json"):
        try:
            weight_map = json.loads((folder / name).read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise InputError(f"{folder / name} is not a weight index (a JSON object with weight_map)") from error
        shards = sorted(set(weight_map.values()))
    else:
        weight_map, shards = None, [name]
    state = {}
    for shard in shards:
        path = resolve_inside(folder, shard, what=f"{folder} weight index")
        if not path.is_file():
            raise InputError(f"weight shard {shard!r} named by the index is missing from {folder}")
        part = load_file(str(path)) if shard.endswith(".safetensors") else sam_io.read_torch_weights(path)
        if weight_map is not None:
            strays = sorted(key for key in part if weight_map.get(key) != shard)
            if strays:
                raise InputError(f"{shard} holds {len(strays)} tensors its index places elsewhere, e.g. {strays[0]}")
        state.update(part)
    if weight_map is not None and set(weight_map) - set(state):
        missing = sorted(set(weight_map) - set(state))
        raise InputError(f"the index of {folder} names {len(missing)} tensors no shard holds, e.g. {missing[0]}")
    return state


def write_weights(state: dict[str, torch.Tensor], folder: Path, shard_bytes: int = 10 * 1000 ** 3) -> None:
    """4.31-style ``pytorch_model-0000k-of-0000n.bin`` shards of at most ``shard_bytes`` (its 10GB default)
    and ``pytorch_model.bin.index.json`` (``metadata.total_size`` + ``weight_map``). Each shard is a plain
    {name: tensor} dict, which ``torch.load(weights_only=True)`` reads."""
    shards, current, size = [], {}, 0
    for name in state:  # 4.31 kept the state dict's order
        tensor = state[name].detach().contiguous().clone()
        if current and size + tensor.nbytes > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name], size = tensor, size + tensor.nbytes
    shards.append(current)
    weight_map, total = {}, 0
    for index, shard in enumerate(shards, 1):
        file = f"pytorch_model-{index:05d}-of-{len(shards):05d}.bin"
        torch.save(shard, folder / file)
        weight_map.update(dict.fromkeys(shard, file))
        total += sum(tensor.nbytes for tensor in shard.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / BIN_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True))


# --------------------------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------------------------
STUDIO_KEY = "interaction_studio"  # our additions for non-released sizes (tiny); released folders lack it
RELEASED_CAM_ENCODER = "vi_v1"
LOSS_WEIGHT = 3.0  # hC_loss_weight / oC_loss_weight of the released training configs


def config_json(config: ContactModelConfig, token_ids: dict[str, int]) -> dict:
    """``config.json`` as the release's merge script writes it: Llama fields plus InteractVLM's own."""
    from engine.contact.vlm import llama_config

    data = {key: value for key, value in llama_config(config.language).to_dict().items()
            if key in RELEASED_LLAMA_FIELDS}
    spec = SAM_SPECS[config.sam]
    data.update(
        _name_or_path="", architectures=["InteractVLMForCausalLM"], model_type="llava", torch_dtype="bfloat16",
        transformers_version="4.31.0", use_cache=False, pad_token_id=0, pretraining_tp=1, rope_scaling=None,
        token_type=config.token_type, seg_token_idx=token_ids.get("[SEG]"), hseg_token_idx=token_ids.get("[HSEG]"),
        oseg_token_idx=token_ids.get("[OSEG]"), img_emb_len=config.vision.num_patches - 1, out_dim=spec.output_channels,
        multiview_cam_cond=True, cam_encoder_type=RELEASED_CAM_ENCODER, multiview_channels=config.num_views,
        hC_sam_view_type=config.human_view_type, oC_sam_view_type=config.object_view_type,
        hC_loss_weight=LOSS_WEIGHT if "human" in config.targets else 0.0,
        oC_loss_weight=LOSS_WEIGHT if "object" in config.targets else 0.0,
        hC_question_type="parts", oC_question_type="afford", use_fusion=False, use_uncertainty=False,
        train_mask_decoder=True, mm_use_im_start_end=config.use_im_start_end, mm_use_im_patch_token=False,
        mm_vision_tower="openai/clip-vit-large-patch14", vision_tower="openai/clip-vit-large-patch14",
        mm_hidden_size=config.vision.hidden, mm_vision_select_layer=config.vision.select_layer,
        mm_vision_select_feature="patch", image_aspect_ratio="square", image_grid_pinpoints=None,
        freeze_mm_mlp_adapter=True, tune_mm_mlp_adapter=False, pretrain_mm_mlp_adapter=None)
    released = get_config(config.name.removeprefix("tiny-") if config.name != "tiny" else "hcontact")
    if (config.sam, config.camera_hidden, config.max_new_tokens) != (released.sam, released.camera_hidden,
                                                                     released.max_new_tokens):
        data[STUDIO_KEY] = {"sam": config.sam, "camera_hidden": config.camera_hidden,
                            "max_new_tokens": config.max_new_tokens}
    return data


RELEASED_LLAMA_FIELDS = ("bos_token_id", "eos_token_id", "hidden_act", "hidden_size", "initializer_range",
                         "intermediate_size", "max_position_embeddings", "num_attention_heads", "num_hidden_layers",
                         "num_key_value_heads", "rms_norm_eps", "tie_word_embeddings", "vocab_size")
GENERATION_CONFIG = {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
                     "transformers_version": "4.31.0"}


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


def read_config(folder: Path, clip_folder: Path) -> ContactModelConfig:
    """The variant a folder holds, from its config.json alone (never its name), and the sizes of its
    Llama and of the CLIP folder. Refuses settings the release never trained with."""
    try:
        data = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{folder / 'config.json'} is not JSON ({error})") from error
    token_type = _field(data, "token_type", folder)
    if not isinstance(token_type, str) or token_type.replace("-DifDe", "") not in TOKEN_TYPES:
        raise InputError(f"{folder / 'config.json'}: token_type {token_type!r} is not supported; "
                         f"InteractVLM's released configs use {sorted(TOKEN_TYPES)} (optionally with -DifDe)")
    _expect(data, folder, multiview_cam_cond=True, cam_encoder_type=RELEASED_CAM_ENCODER, use_fusion=False,
            use_uncertainty=False)
    studio = data.get(STUDIO_KEY, {})
    targets = variant_targets(data, token_type, folder)
    name = {("human",): "hcontact", ("object",): "oafford"}.get(targets, "joint")
    base = get_config(name)
    vision = vision_size(clip_folder, data.get("mm_vision_select_layer", -2))
    config = replace(base, name=name, targets=targets, token_type=token_type, language=language_size(data, folder),
                     vision=vision, sam=studio.get("sam", "vit_h"),
                     human_view_type=data.get("hC_sam_view_type") or base.human_view_type,
                     object_view_type=data.get("oC_sam_view_type") or base.object_view_type,
                     num_views=data.get("multiview_channels", 4),
                     camera_hidden=studio.get("camera_hidden", base.camera_hidden),
                     use_im_start_end=data.get("mm_use_im_start_end", base.use_im_start_end),
                     max_new_tokens=studio.get("max_new_tokens", base.max_new_tokens))
    _expect(data, folder, multiview_channels=4, img_emb_len=vision.num_patches - 1,
            out_dim=SAM_SPECS[config.sam].output_channels)
    return config


def variant_targets(data: dict, token_type: str, folder: Path) -> tuple[str, ...]:
    """What a folder predicts: both for Gen-Hu-Obj; else from the 3D loss weights (the lifters the release
    builds), falling back to which view types are set."""
    if token_type.replace("-DifDe", "") == "Gen-Hu-Obj":
        return ("human", "object")
    human = (data.get("hC_loss_weight") or 0) > 0
    obj = (data.get("oC_loss_weight") or 0) > 0
    if not (human or obj):
        human, obj = bool(data.get("hC_sam_view_type")), bool(data.get("oC_sam_view_type"))
    if not (human or obj):
        raise InputError(f"{folder / 'config.json'} says neither hC_* nor oC_* (loss weights or view types); "
                         "cannot tell whether the model predicts human contact or object affordance")
    return tuple(target for target, on in (("human", human), ("object", obj)) if on)


def _expect(data: dict, folder: Path, **values) -> None:
    for key, value in values.items():
        if key in data and data[key] != value:
            raise InputError(f"{folder / 'config.json'}: {key} is {data[key]!r}; only {value!r} (the released "
                             "setting) is supported")


# --------------------------------------------------------------------------------------------------------------
# Loading and saving
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference: ``name`` is the folder's name, shown as the result's source;
    ``image_processor`` is CLIP's, configured from the CLIP folder's ``preprocessor_config.json``."""

    model: InteractVLM
    tokenizer: object
    name: str
    token_ids: dict
    image_processor: object = None


def check_quantisation(bits: int | None) -> None:
    if bits is None:
        return
    if bits not in (4, 8):
        raise InputError(f"quantisation must be 4 or 8 bits, got {bits}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InputError(f"{bits}-bit loading needs the bitsandbytes package, which is not installed here; "
                         "install it on a CUDA machine, or load in bf16/fp16/fp32")


def load_interactvlm(folder: Path | str, clip_folder: Path | str, *, dtype: str = "bf16",
                     device: torch.device | str = "cpu", bits: int | None = None) -> LoadedModel:
    """A released merged folder (plus the CLIP vision folder) -> an eval-mode model on ``device``.

    Parameters are never randomly initialised: the module is built with meta parameters and adopts the
    checkpoint's tensors, so a 13B model needs only its own memory. Raises MissingAssetError for absent
    folders, CheckpointMismatch naming every missing, unexpected or wrongly shaped key, InputError for a
    config or tokenizer that does not agree with the weights.
    """
    folder, clip_folder = Path(folder), Path(clip_folder)
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    check_quantisation(bits)
    if not (folder / "config.json").is_file():
        raise MissingAssetError("InteractVLM checkpoint folder", folder, "see the README's model table")
    config = read_config(folder, clip_folder)
    tokenizer = load_tokenizer(folder)
    token_ids = check_token_ids(tokenizer, config, json.loads((folder / "config.json").read_text()), folder)
    state, unexpected = _convert(read_weights(folder), config)
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
    return LoadedModel(model, tokenizer, folder.name, token_ids, clip_processor(clip_folder, config.vision.image_size))


def _convert(released: dict[str, torch.Tensor], config: ContactModelConfig) -> tuple[dict, tuple[str, ...]]:
    """Released tensors -> (ours, unexpected released names), the rotary buffers checked and dropped."""
    ours, unexpected = released_to_ours(released, config.decoders)
    ours, rotary = split_rotary(ours)
    return ours, unexpected + check_rotary(rotary, config)


def load_tokenizer(folder: Path):
    """The folder's tokenizer: the release's slow Llama files (``tokenizer.model``) through
    ``ReleaseLlamaTokenizer``, else a ``tokenizer.json`` (the studio's word tokenizer of tiny models)."""
    from engine.contact.llama_tokenizer import ReleaseLlamaTokenizer

    if (folder / "tokenizer.model").is_file():
        tokenizer = ReleaseLlamaTokenizer.from_pretrained(folder)
        if tokenizer.pad_token is None:  # LISA pads with <unk>
            tokenizer.pad_token = tokenizer.unk_token
        return tokenizer
    if (folder / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
    raise MissingAssetError("InteractVLM tokenizer", folder / "tokenizer.model",
                            "the released folders ship the Llama tokenizer files next to the weights")


def check_token_ids(tokenizer, config: ContactModelConfig, data: dict, folder: Path) -> dict[str, int]:
    """token -> id for the variant's contact tokens; each must equal config.json's ``*_token_idx``."""
    token_ids = {token: token_id(tokenizer, token) for token in config.seg_tokens}
    for token, field in (("[SEG]", "seg_token_idx"), ("[HSEG]", "hseg_token_idx"), ("[OSEG]", "oseg_token_idx")):
        if token in token_ids and data.get(field) is not None and data[field] != token_ids[token]:
            raise InputError(f"{folder / 'config.json'}: {field} is {data[field]} but the tokenizer gives {token} the "
                             f"id {token_ids[token]}; the tokenizer files do not belong to these weights")
    return token_ids


def clip_state(clip_folder: Path) -> dict[str, torch.Tensor]:
    tower = CLIPVisionModel.from_pretrained(clip_folder, local_files_only=True)
    return {f"vlm.vision_tower.{name}": tensor for name, tensor in tower.state_dict().items()}


def released_name(name: str) -> str:
    """Our parameter name as the released folder spells it (for error messages)."""
    if name.startswith("sam."):
        return SAM_PREFIX + (sam_io.ours_key_to_sa(name[len("sam."):]) or name)
    if name.startswith("vlm.vision_tower."):
        return f"{name} (from the CLIP folder)"
    if ROTARY.fullmatch(name):
        return name
    inverse = tuple((ours, released) for released, ours in _RULES)
    return _swap(name, inverse) or name


def save_released(model: InteractVLM, tokenizer, folder: Path | str, *, dtype: str = "bf16",
                  clip_folder: Path | str | None = None, shard_bytes: int = 10 * 1000 ** 3) -> Path:
    """Write the release's folder layout (LoRA merged, no vision tower, rotary buffers included, 4.31 shards
    + index, config.json with the release's field values, generation_config.json, tokenizer files);
    optionally the CLIP folder too."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = released_state(merged_state_dict(model), model.config)
    write_weights({name: tensor.to(DTYPES[dtype]) if tensor.is_floating_point() else tensor
                   for name, tensor in state.items()}, folder, shard_bytes)
    token_ids = {token: token_id(tokenizer, token) for token in model.config.seg_tokens}
    (folder / "config.json").write_text(json.dumps(config_json(model.config, token_ids), indent=2))
    (folder / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2))
    tokenizer.save_pretrained(folder)
    if clip_folder is not None:
        model.vlm.vision_tower.save_pretrained(Path(clip_folder))
        clip_processor(None, model.config.vision.image_size).save_pretrained(str(clip_folder))
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
