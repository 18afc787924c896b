"""Tiny seeded models saved in the real released folder layouts: an SD2-style inpainting pipeline
(diffusers: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) and a CLIP ViT-B/32-style
folder (transformers). No weights are downloaded; the tokenizer's BPE vocabulary is built here."""
from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ("a", "person", "woman", "man", "sitting", "on", "the", "sofa", "reading", "full", "body", "lying", "bed",
         "low", "quality", "blurry", "wearing", "white", "shirt", "standing", "photo", "of", "chair")


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's byte-to-printable-character table (the public BPE convention)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, characters)))


def write_tokenizer(folder: Path) -> None:
    """vocab.json + merges.txt: every byte alone and word-final, and each WORDS entry merged left to right."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(token, len(vocab))
    merges: list[str] = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merge = f"{current} {piece}"
            if merge not in merges:
                merges.append(merge)
            current += piece
            vocab.setdefault(current, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77,
                              pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)


def vocab_size(folder: Path) -> int:
    return len(json.loads((folder / "vocab.json").read_text()))


def write_tiny_sd2_inpainting(root: Path, seed: int = 0) -> Path:
    """A diffusers StableDiffusionInpaintPipeline folder with SD2's block structure at tiny widths."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    write_tokenizer(root / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size(root / "tokenizer"), hidden_size=32,
                                                intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                                max_position_embeddings=77, hidden_act="gelu",
                                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                                pad_token_id=tokenizer.pad_token_id, projection_dim=32))
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=9, out_channels=4, layers_per_block=2,
        block_out_channels=(8, 16, 16, 16), norm_num_groups=4, cross_attention_dim=32, attention_head_dim=(1, 2, 4, 4),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, use_linear_projection=True,
        only_cross_attention=True)  # no 4096 x 4096 self-attention at 64 x 64 latents: a CPU test stays fast
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(4, 4, 4, 4),
                        layers_per_block=1, norm_num_groups=2, sample_size=512,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_pretrained(root)
    return root


def write_tiny_clip(root: Path, seed: int = 0) -> Path:
    """A transformers CLIPModel folder (ViT-B/32 layout, tiny widths) with its tokenizer and image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    write_tokenizer(root)
    config = CLIPConfig(
        text_config={"vocab_size": vocab_size(root), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 77},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 64, "patch_size": 32},
        projection_dim=16)
    CLIPModel(config).eval().save_pretrained(root)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(root)
    return root
