"""Tiny seeded models saved in the real released folder layouts: an SD2-style inpainting pipeline
(diffusers: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) and a CLIP ViT-B/32-style
folder (transformers), and a ViTPose (transformers) whose heatmaps peak at known places of the person box.
No weights are downloaded; the tokenizer's BPE vocabulary is built here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


# The tiny ViTPose: input 128 x 96, 8 x 8 patches (ViTPose pads its patch convolution by 2, so patches
# must exceed 4 px to keep the grid), a 16 x 12 token grid, heatmaps 64 x 48 (x4 upsampling).
# Each keypoint's heatmap peaks on one token of this template: a person standing upright and facing the
# camera (their left on the image's right), in (row, column) tokens of the crop around the person box,
# clear of the grid's border (where the upsampling's edge padding would flatten the peak).
VITPOSE_INPUT = (128, 96)
VITPOSE_PATCH = 8
TOKEN_GRID = (VITPOSE_INPUT[0] // VITPOSE_PATCH, VITPOSE_INPUT[1] // VITPOSE_PATCH)
UPSAMPLING = 4  # VitPoseConfig.scale_factor
TEMPLATE_TOKENS = {
    "nose": (2, 5), "left_eye": (1, 6), "right_eye": (1, 5), "left_ear": (2, 7), "right_ear": (2, 4),
    "left_shoulder": (4, 8), "right_shoulder": (4, 3), "left_elbow": (6, 9), "right_elbow": (6, 2),
    "left_wrist": (8, 9), "right_wrist": (8, 2), "left_hip": (8, 7), "right_hip": (8, 4),
    "left_knee": (11, 7), "right_knee": (11, 4), "left_ankle": (13, 7), "right_ankle": (13, 4),
    "left_big_toe": (14, 8), "left_small_toe": (14, 9), "left_heel": (14, 7),
    "right_big_toe": (14, 3), "right_small_toe": (14, 2), "right_heel": (14, 4),
}
TEMPLATE_PEAK = 0.9


def template_tokens(num_labels: int) -> np.ndarray:
    """(K, 2) (row, column) token of every keypoint: COCO-17, then (whole-body) the 6 feet, 68 face
    keypoints on the nose token, 21 + 21 hand keypoints on the wrists' tokens."""
    from engine.fitting.keypoints import COCO17_NAMES, COCO23_NAMES

    names = COCO17_NAMES if num_labels == 17 else COCO23_NAMES + ("nose",) * 68 + ("left_wrist",) * 21 + ("right_wrist",) * 21
    if len(names) != num_labels:
        raise ValueError(f"a template for 17 or 133 keypoints, not {num_labels}")
    return np.array([TEMPLATE_TOKENS[name] for name in names])


def write_template_vitpose(folder: Path, num_labels: int = 17, seed: int = 0) -> np.ndarray:
    """A ViTPose folder (transformers layout: config.json, model.safetensors, preprocessor_config.json)
    whose heatmap k peaks, with value 0.9, on the token ``template_tokens(num_labels)[k]`` of the crop.

    The backbone's output is its embedding stage (``out_indices=[0]``): patch embeddings zeroed, position
    embeddings one-hot (channel k set on keypoint k's token), the backbone's layer norm; the simple
    decoder's ReLU zeroes every other token, its 3 x 3 convolution copies channel k to heatmap k, scaled
    so the peak is 0.9. The transformer layer is seeded and unused. Returns the template tokens."""
    import transformers
    from engine.fitting.vitpose import _processor_class

    torch.manual_seed(seed)
    hidden = num_labels + 1  # even, so 2 heads divide it
    backbone = transformers.VitPoseBackboneConfig(image_size=list(VITPOSE_INPUT), patch_size=[VITPOSE_PATCH] * 2,
                                                  hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                                                  mlp_ratio=1, out_indices=[0])
    model = transformers.VitPoseForPoseEstimation(transformers.VitPoseConfig(backbone_config=backbone,
                                                                              num_labels=num_labels)).eval()
    tokens = template_tokens(num_labels)
    columns = TOKEN_GRID[1]
    with torch.no_grad():
        embeddings = model.backbone.embeddings
        embeddings.patch_embeddings.projection.weight.zero_()
        embeddings.patch_embeddings.projection.bias.zero_()
        embeddings.position_embeddings.zero_()
        for k, (row, column) in enumerate(tokens):
            embeddings.position_embeddings[0, 1 + row * columns + column, k] = 1.0
        model.backbone.layernorm.weight.fill_(1.0)
        model.backbone.layernorm.bias.zero_()
        conv = model.head.conv
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[torch.arange(num_labels), torch.arange(num_labels), 1, 1] = 1.0
        peaks = model(pixel_values=torch.zeros(1, 3, *VITPOSE_INPUT)).heatmaps.amax(dim=(0, 2, 3))
        conv.weight[torch.arange(num_labels), torch.arange(num_labels), 1, 1] = TEMPLATE_PEAK / peaks
    model.save_pretrained(folder)
    _processor_class()(size={"height": VITPOSE_INPUT[0], "width": VITPOSE_INPUT[1]}).save_pretrained(folder)
    return tokens


def template_keypoints(tokens: np.ndarray, box) -> tuple[np.ndarray, float]:
    """Where the template's keypoints land in the image for a person box (x0, y0, x1, y1), worked out
    by hand: the box grown to the 3:4 input shape and by 1.25 around its centre (ViTPose's crop), the
    heatmap peak at the token centre (4 t + 1.5 heatmap pixels, bilinear x4 upsampling), heatmap pixels
    mapped to the crop's size / (heatmap size - 1) (ViTPose's unbiased transform).
    Returns (K, 2) xy and the size of one heatmap pixel in image pixels (the decoding's resolution)."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    aspect = VITPOSE_INPUT[1] / VITPOSE_INPUT[0]
    width, height = (width, width / aspect) if width > aspect * height else (height * aspect, height)
    crop = np.array([width, height]) * 1.25
    heatmap = np.array([TOKEN_GRID[1], TOKEN_GRID[0]]) * UPSAMPLING  # (w, h) in heatmap pixels
    peak = tokens[:, ::-1] * UPSAMPLING + (UPSAMPLING - 1) / 2  # (x, y) heatmap pixels: the token centre
    xy = peak * crop / (heatmap - 1) + np.array([(x0 + x1) / 2, (y0 + y1) / 2]) - crop / 2
    return xy, float((crop / (heatmap - 1)).max())
