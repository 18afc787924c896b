"""LoRA on the language model through ``peft`` with the released settings, and merging for export.

Released recipe (REFERENCE.md section 1): r=8, alpha=16, dropout 0.05 on the LM's ``q_proj``/``v_proj``
only. Adapters are injected into ``vlm.language_model`` alone, so SAM's and CLIP's own ``q_proj``/``v_proj``
are never wrapped. Released folders hold merged weights; ``merged_state_dict`` produces them.
"""
from __future__ import annotations

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

ADAPTER = "default"


def apply_lora(model) -> None:
    """Wrap the LM's target projections with LoRA adapters (in place)."""
    config = model.config
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets), bias="none")
    inject_adapter_in_model(lora, model.vlm.language_model, adapter_name=ADAPTER)


def has_lora(model) -> bool:
    return any(isinstance(module, LoraLayer) for module in model.modules())


def merged_state_dict(model) -> dict[str, torch.Tensor]:
    """The state dict with every LoRA adapter folded into its base weight (``W + scale * B A``) and the
    ``base_layer``/``lora_*`` names gone: the layout of a model without adapters."""
    layers = {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    merged = {}
    for name, tensor in model.state_dict().items():
        if ".lora_" in name:
            continue
        owner, _, leaf = name.partition(".base_layer.")
        if not leaf:
            merged[name] = tensor
            continue
        if leaf == "weight":
            tensor = tensor + layers[owner].get_delta_weight(ADAPTER).to(tensor.dtype)
        merged[f"{owner}.{leaf}"] = tensor
    return merged
