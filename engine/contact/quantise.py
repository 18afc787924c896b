"""8-/4-bit language model through ``bitsandbytes`` (optional; CUDA only).

Only the Llama decoder layers are quantised: CLIP, SAM, Γ, Φ and ``lm_head`` stay in the load dtype,
as LISA does when it loads in 8 or 4 bits. ``checkpoint.check_quantisation`` says when the package is absent.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.errors import InputError


def _quantised_linear(linear: nn.Linear, bits: int) -> nn.Module:
    import bitsandbytes as bnb

    weight = linear.weight.data.to("cpu", torch.float16)
    bias = linear.bias is not None
    if bits == 8:
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias, has_fp16_weights=False,
                                    threshold=6.0)
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=bias, compute_dtype=linear.weight.dtype,
                                  quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
    if bias:
        layer.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    return layer.to(linear.weight.device)  # moving to CUDA is what quantises the weights


def quantise_language_model(model, bits: int) -> None:
    """Replace every Linear of the LM's decoder layers with its bitsandbytes counterpart (in place)."""
    if model.device.type != "cuda":
        raise InputError(f"{bits}-bit loading runs on CUDA only; use --dtype bf16/fp32 on {model.device.type}")
    layers = model.vlm.language_model.model.layers
    for parent in list(layers.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, _quantised_linear(child, bits))
