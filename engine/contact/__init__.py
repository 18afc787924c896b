"""InteractVLM (REFERENCE.md section 1): semantic human contact and object affordance from one image.

Modules: ``config`` (variants and presets), ``vocabulary`` (object and affordance names), ``prior``
(the category-prior baseline), ``prompts`` and ``tokenizer`` (text), ``vlm`` (CLIP + projector + Llama),
``llama_tokenizer`` (the release's slow Llama tokenizer, restated), ``sam`` (SAM parts and checkpoint conversion),
``model`` (Γ, Φ, the joint model's splitter, MV-Loc), ``lora`` and ``quantise``,
``checkpoint`` (released folders), ``predict`` (the inference API and the engine registry),
``data``/``losses``/``train`` and ``evaluate``. Nothing here imports torch at package import.
"""
