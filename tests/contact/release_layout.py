"""Test helpers: the release's checkpoint key names as a plain statement, and a trained SentencePiece model.

``release_keys`` writes out, by template, every key the release's merge script saves (transformers 4.31
``InteractVLMForCausalLM.state_dict()`` without the vision tower): the Llama keys with the persistent rotary
buffer per layer, the LLaVA projector, Γ (``model.text_hidden_fcs.0``), Φ (``cam_pose_encoder``), the joint
model's ``attention_splitter`` and SAM in segment_anything names under ``model.visual_model.``. It does not
use the engine's conversion tables, so a layout test against it can fail.
"""
from __future__ import annotations

import io
from pathlib import Path

WB = ("weight", "bias")


def _both(prefix: str) -> list[str]:
    return [f"{prefix}.{leaf}" for leaf in WB]


def llama_keys(layers: int) -> list[str]:
    keys = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for n in range(layers):
        layer = f"model.layers.{n}"
        keys += [f"{layer}.self_attn.{p}_proj.weight" for p in "qkvo"]
        keys += [f"{layer}.self_attn.rotary_emb.inv_freq"]
        keys += [f"{layer}.mlp.{p}_proj.weight" for p in ("gate", "up", "down")]
        keys += [f"{layer}.input_layernorm.weight", f"{layer}.post_attention_layernorm.weight"]
    return keys


def sam_keys(depth: int, decoders=("mask_decoder",)) -> list[str]:
    root = "model.visual_model"
    keys = [f"{root}.image_encoder.pos_embed", *_both(f"{root}.image_encoder.patch_embed.proj")]
    for n in range(depth):
        block = f"{root}.image_encoder.blocks.{n}"
        keys += _both(f"{block}.norm1") + _both(f"{block}.norm2") + _both(f"{block}.attn.qkv")
        keys += _both(f"{block}.attn.proj") + [f"{block}.attn.rel_pos_h", f"{block}.attn.rel_pos_w"]
        keys += _both(f"{block}.mlp.lin1") + _both(f"{block}.mlp.lin2")
    keys += [f"{root}.image_encoder.neck.0.weight", *_both(f"{root}.image_encoder.neck.1"),
             f"{root}.image_encoder.neck.2.weight", *_both(f"{root}.image_encoder.neck.3")]
    prompt = f"{root}.prompt_encoder"
    keys += [f"{prompt}.pe_layer.positional_encoding_gaussian_matrix", f"{prompt}.not_a_point_embed.weight",
             f"{prompt}.no_mask_embed.weight"] + [f"{prompt}.point_embeddings.{i}.weight" for i in range(4)]
    for i in (0, 1, 3, 4, 6):
        keys += _both(f"{prompt}.mask_downscaling.{i}")
    for decoder in decoders:
        d = f"{root}.{decoder}"
        attention = lambda name: [key for p in "qkv" for key in _both(f"{name}.{p}_proj")] + _both(f"{name}.out_proj")
        for n in range(2):
            layer = f"{d}.transformer.layers.{n}"
            keys += attention(f"{layer}.self_attn") + attention(f"{layer}.cross_attn_token_to_image")
            keys += attention(f"{layer}.cross_attn_image_to_token")
            keys += [key for i in range(1, 5) for key in _both(f"{layer}.norm{i}")]
            keys += _both(f"{layer}.mlp.lin1") + _both(f"{layer}.mlp.lin2")
        keys += attention(f"{d}.transformer.final_attn_token_to_image") + _both(f"{d}.transformer.norm_final_attn")
        keys += [f"{d}.iou_token.weight", f"{d}.mask_tokens.weight"]
        keys += [key for i in (0, 1, 3) for key in _both(f"{d}.output_upscaling.{i}")]
        keys += [key for m in range(4) for i in range(3) for key in _both(f"{d}.output_hypernetworks_mlps.{m}.layers.{i}")]
        keys += [key for i in range(3) for key in _both(f"{d}.iou_prediction_head.layers.{i}")]
    return keys


SPLITTER = ("input_proj", "query_human", "query_object", "key", "value", "output_proj")


def release_keys(layers: int, sam_depth: int, joint: bool) -> set[str]:
    keys = llama_keys(layers) + sam_keys(sam_depth)
    keys += _both("model.mm_projector") + _both("model.text_hidden_fcs.0.0") + _both("model.text_hidden_fcs.0.2")
    keys += _both("cam_pose_encoder.spatial_encoder.0") + _both("cam_pose_encoder.spatial_encoder.2")
    keys += [key for v in range(4) for key in _both(f"cam_pose_encoder.view_transforms.{v}")]
    if joint:
        keys += [key for name in SPLITTER for key in _both(f"attention_splitter.{name}")]
    assert len(keys) == len(set(keys))
    return set(keys)


def train_sentencepiece(path: Path) -> Path:
    """A 600-piece BPE SentencePiece model (Llama's special ids: <unk> 0, <s> 1, </s> 2) on the prompts."""
    import sentencepiece

    from engine.contact import prompts
    from engine.contact.vocabulary import AFFORDANCES, OBJECT_LABELS

    texts = [prompts.SYSTEM, "USER: ASSISTANT:", "left hand, right foot, hips, back, head"]
    texts += list(prompts.HUMAN_QUESTIONS + prompts.HUMAN_ANSWERS + prompts.AFFORDANCE_QUESTIONS
                  + prompts.AFFORDANCE_ANSWERS + OBJECT_LABELS + AFFORDANCES)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts * 3), model_writer=model, vocab_size=600, model_type="bpe", unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, byte_fallback=True, character_coverage=1.0, split_digits=True, minloglevel=2,
        num_threads=1)
    path.write_bytes(model.getvalue())
    return path


class ScriptedAnswer:
    """Makes the language model answer ``tokens`` then </s> by adding 1e4 to those logits, one per step.
    The hidden states stay the model's own; only the choice of the next token is scripted."""

    def __init__(self, model, tokens: list[int]):
        self.tokens, self.step = tokens + [2], 0
        self.handle = model.vlm.language_model.lm_head.register_forward_hook(self)
        self.restart = model.vlm.language_model.register_forward_pre_hook(self._prefill, with_kwargs=True)

    def _prefill(self, module, args, kwargs):
        if kwargs.get("inputs_embeds") is not None:  # a new generate() call starts from the embedded prompt
            self.step = 0

    def __call__(self, module, inputs, logits):
        logits = logits.clone()
        logits[:, -1, self.tokens[min(self.step, len(self.tokens) - 1)]] += 1e4
        self.step += 1
        return logits

    def remove(self):
        self.handle.remove()
        self.restart.remove()
