"""InteractVLM (REFERENCE.md section 1): semantic human contact and object affordance from one image.

Modules: ``config`` (variants and presets), ``vocabulary`` (object and affordance names), ``prior``
(the category-prior baseline), ``prompts`` and ``tokenizer`` (text), ``vlm`` (CLIP + projector + Llama),
``sam`` (SAM parts and checkpoint conversion), ``model`` (Γ, Φ, MV-Loc), ``lora`` and ``quantise``,
``checkpoint`` (released folders), ``predict`` (the inference API and the engine registry),
``data``/``losses``/``train`` and ``evaluate``. Nothing here imports torch at package import.
"""
