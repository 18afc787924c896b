"""SAM parts on transformers' modules, and segment_anything-layout checkpoints saved from a tiny seeded SAM."""
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from engine.contact.sam import (
    PIXEL_MEAN,
    PIXEL_STD,
    SAM_SPECS,
    SAM_TINY,
    CheckpointMismatch,
    SamParts,
    from_segment_anything,
    load_sam_checkpoint,
    load_state_dict_strict,
    sam_config,
    to_segment_anything,
)
from engine.errors import InputError, MissingAssetError

JOINT = ("human_mask_decoder", "object_mask_decoder")
S, s, C = SAM_TINY.image_size, SAM_TINY.embedding_size, SAM_TINY.output_channels

# Representative segment_anything names for a depth-2 encoder (block 1 global, block 0 windowed).
SA_KEYS = [
    "image_encoder.patch_embed.proj.weight", "image_encoder.patch_embed.proj.bias", "image_encoder.pos_embed",
    "image_encoder.blocks.0.norm1.weight", "image_encoder.blocks.0.attn.qkv.weight",
    "image_encoder.blocks.0.attn.proj.bias", "image_encoder.blocks.0.attn.rel_pos_h",
    "image_encoder.blocks.1.attn.rel_pos_w", "image_encoder.blocks.1.norm2.bias",
    "image_encoder.blocks.1.mlp.lin1.weight", "image_encoder.blocks.1.mlp.lin2.bias",
    "image_encoder.neck.0.weight", "image_encoder.neck.1.weight", "image_encoder.neck.1.bias",
    "image_encoder.neck.2.weight", "image_encoder.neck.3.bias",
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", "prompt_encoder.point_embeddings.0.weight",
    "prompt_encoder.point_embeddings.3.weight", "prompt_encoder.not_a_point_embed.weight",
    "prompt_encoder.mask_downscaling.0.weight", "prompt_encoder.mask_downscaling.1.bias",
    "prompt_encoder.mask_downscaling.3.weight", "prompt_encoder.mask_downscaling.4.weight",
    "prompt_encoder.mask_downscaling.6.bias", "prompt_encoder.no_mask_embed.weight",
    "mask_decoder.transformer.layers.0.self_attn.q_proj.weight",
    "mask_decoder.transformer.layers.0.cross_attn_token_to_image.k_proj.bias",
    "mask_decoder.transformer.layers.1.cross_attn_image_to_token.out_proj.weight",
    "mask_decoder.transformer.layers.1.norm1.weight", "mask_decoder.transformer.layers.1.norm4.bias",
    "mask_decoder.transformer.layers.0.mlp.lin1.weight", "mask_decoder.transformer.layers.0.mlp.lin2.bias",
    "mask_decoder.transformer.final_attn_token_to_image.v_proj.weight",
    "mask_decoder.transformer.norm_final_attn.weight", "mask_decoder.iou_token.weight",
    "mask_decoder.mask_tokens.weight", "mask_decoder.output_upscaling.0.weight",
    "mask_decoder.output_upscaling.1.bias", "mask_decoder.output_upscaling.3.weight",
    "mask_decoder.output_hypernetworks_mlps.0.layers.0.weight",
    "mask_decoder.output_hypernetworks_mlps.3.layers.2.bias",
    "mask_decoder.iou_prediction_head.layers.0.weight", "mask_decoder.iou_prediction_head.layers.1.bias",
    "mask_decoder.iou_prediction_head.layers.2.weight",
]
TRANSFORMERS_ONLY = ("layer_norm", "projection", "proj_in", "proj_out", "upscale_", ".mask_embed.", ".point_embed.",
                     "shared_embedding", "mask_decoders.", "vision_encoder", "image_encoder.layers.")


def seeded_parts(decoders=("mask_decoder",), seed=0) -> SamParts:
    """A tiny SAM with every tensor drawn from a seeded normal, so nothing is zero- or identity-initialised."""
    torch.manual_seed(seed)
    parts = SamParts(SAM_TINY, decoders)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in parts.state_dict().values():
            tensor.copy_(0.3 * torch.randn(tensor.shape, generator=generator))
    return parts.eval()


def images(count=2, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, S, S, 3), dtype=np.uint8)


def outputs(parts: SamParts, pixels: np.ndarray, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        embeddings = parts.encode_images(parts.preprocess(pixels))
        result = {"embeddings": embeddings}
        for name in parts.decoder_names:
            low = parts.decode(name, embeddings, tokens)
            result[name], result[name + "/full"] = low, parts.upsample(low)
    return result


def save(state: dict, tmp_path, name="sam.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def single():
    return seeded_parts()


@pytest.fixture(scope="module")
def tokens():
    return torch.randn(2, 1, C, generator=torch.Generator().manual_seed(2))


def test_segment_anything_layout_has_the_released_names(single):
    layout = to_segment_anything(single.state_dict())
    assert len(layout) == len(single.state_dict())
    assert set(SA_KEYS) <= set(layout)
    leftovers = [key for key in layout if any(marker in key for marker in TRANSFORMERS_ONLY)]
    assert leftovers == []
    assert not any(key.startswith("image_encoder.blocks.2.") for key in layout)
    # Shapes follow segment_anything: (1, s, s, D) absolute positions, (2w-1, head) windowed and (2s-1, head)
    # global relative positions, and the (2, C/2) Fourier matrix stored as is.
    head = SAM_TINY.hidden_size // SAM_TINY.num_heads
    assert layout["image_encoder.pos_embed"].shape == (1, s, s, SAM_TINY.hidden_size)
    assert layout["image_encoder.blocks.0.attn.rel_pos_h"].shape == (2 * SAM_TINY.window_size - 1, head)
    assert layout["image_encoder.blocks.1.attn.rel_pos_h"].shape == (2 * s - 1, head)
    assert layout["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].shape == (2, C // 2)
    assert layout["mask_decoder.mask_tokens.weight"].shape == (SAM_TINY.num_multimask_outputs + 1, C)
    # Distinct widths make the shapes say which segment_anything layer each renamed tensor became.
    hidden, iou, masks = SAM_TINY.hidden_size, SAM_TINY.iou_head_hidden_dim, SAM_TINY.num_multimask_outputs + 1
    expected_shapes = {
        "image_encoder.neck.0.weight": (C, hidden, 1, 1), "image_encoder.neck.2.weight": (C, C, 3, 3),
        "prompt_encoder.mask_downscaling.0.weight": (SAM_TINY.mask_in_chans // 4, 1, 2, 2),
        "prompt_encoder.mask_downscaling.3.weight": (SAM_TINY.mask_in_chans, SAM_TINY.mask_in_chans // 4, 2, 2),
        "prompt_encoder.mask_downscaling.6.weight": (C, SAM_TINY.mask_in_chans, 1, 1),
        "mask_decoder.output_upscaling.0.weight": (C, C // 4, 2, 2),
        "mask_decoder.output_upscaling.1.weight": (C // 4,),
        "mask_decoder.output_upscaling.3.weight": (C // 4, C // 8, 2, 2),
        "mask_decoder.output_hypernetworks_mlps.2.layers.2.weight": (C // 8, C),
        "mask_decoder.iou_prediction_head.layers.0.weight": (iou, C),
        "mask_decoder.iou_prediction_head.layers.1.weight": (iou, iou),
        "mask_decoder.iou_prediction_head.layers.2.weight": (masks, iou),
        "mask_decoder.transformer.layers.0.self_attn.q_proj.weight": (C, C),
        "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight": (C // 2, C),
        "mask_decoder.transformer.layers.0.mlp.lin1.weight": (SAM_TINY.decoder_mlp_dim, C),
    }
    assert {key: tuple(layout[key].shape) for key in expected_shapes} == expected_shapes


def test_conversion_round_trips_both_ways(single):
    ours = single.state_dict()
    back = from_segment_anything(to_segment_anything(ours))
    assert list(back) == list(ours) and all(back[key] is ours[key] for key in ours)
    with pytest.raises(InputError, match="no segment_anything name"):
        to_segment_anything({**ours, "image_encoder.extra.weight": torch.zeros(1)})


@pytest.mark.parametrize("decoders, prefix", [
    (("mask_decoder",), ""),
    (JOINT, ""),
    (("mask_decoder",), "model.visual_model."),
    (JOINT, "model.visual_model."),
])
def test_checkpoint_loads_back_with_identical_outputs(tmp_path, tokens, decoders, prefix):
    parts = seeded_parts(decoders)
    layout = to_segment_anything(parts.state_dict(), prefix=prefix)
    roots = {key[len(prefix):].split(".")[0] for key in layout}
    assert roots == {"image_encoder", "prompt_encoder", *decoders}
    if prefix:  # a merged InteractVLM checkpoint also carries the language model and projection
        layout |= {"model.layers.0.self_attn.q_proj.weight": torch.zeros(2, 2), "lm_head.weight": torch.zeros(3, 2)}
    loaded = load_sam_checkpoint(save(layout, tmp_path), SAM_TINY, decoders=decoders, prefix=prefix)
    expected, actual = outputs(parts, images(), tokens), outputs(loaded, images(), tokens)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    assert not loaded.training and all(p.device.type == "cpu" for p in loaded.parameters())


def test_loader_converts_dtype_and_accepts_pixel_statistics(tmp_path, single):
    layout = to_segment_anything(single.state_dict())
    layout |= {"pixel_mean": torch.tensor(PIXEL_MEAN).view(3, 1, 1), "pixel_std": torch.tensor(PIXEL_STD).view(3, 1, 1)}
    loaded = load_sam_checkpoint(save(layout, tmp_path), SAM_TINY, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert not loaded.prompt_encoder.shared_embedding.positional_embedding.requires_grad
    layout["pixel_mean"] = torch.zeros(3, 1, 1)
    with pytest.raises(InputError, match="pixel_mean"):
        load_sam_checkpoint(save(layout, tmp_path), SAM_TINY)


def test_unknown_key_is_named(tmp_path, single):
    layout = to_segment_anything(single.state_dict(), prefix="model.visual_model.")
    layout["model.visual_model.image_encoder.blocks.0.attn.extra_bias"] = torch.zeros(4)
    with pytest.raises(CheckpointMismatch, match=r"unexpected: model\.visual_model\.image_encoder\.blocks\.0\.attn"
                                                 r"\.extra_bias") as caught:
        load_sam_checkpoint(save(layout, tmp_path), SAM_TINY, prefix="model.visual_model.")
    assert caught.value.unexpected == ("model.visual_model.image_encoder.blocks.0.attn.extra_bias",)
    assert caught.value.missing == () and caught.value.mismatched == ()


def test_missing_key_is_named_in_segment_anything_terms(tmp_path, single):
    layout = to_segment_anything(single.state_dict())
    del layout["mask_decoder.iou_prediction_head.layers.1.weight"]
    with pytest.raises(CheckpointMismatch, match=r"1 missing: mask_decoder\.iou_prediction_head\.layers\.1\.weight"):
        load_sam_checkpoint(save(layout, tmp_path), SAM_TINY)


def test_shape_mismatch_is_named(tmp_path, single):
    layout = to_segment_anything(single.state_dict())
    layout["image_encoder.neck.0.weight"] = torch.zeros(C, C + 1, 1, 1)
    with pytest.raises(CheckpointMismatch, match=r"wrong shape: image_encoder\.neck\.0\.weight") as caught:
        load_sam_checkpoint(save(layout, tmp_path), SAM_TINY)
    assert caught.value.mismatched == (("image_encoder.neck.0.weight", (C, SAM_TINY.hidden_size, 1, 1),
                                        (C, C + 1, 1, 1)),)


def test_decoder_the_caller_did_not_ask_for_is_unexpected(tmp_path):
    layout = to_segment_anything(seeded_parts(("mask_decoder", *JOINT)).state_dict())
    with pytest.raises(CheckpointMismatch) as caught:
        load_sam_checkpoint(save(layout, tmp_path), SAM_TINY, decoders=JOINT)
    assert "mask_decoder.iou_token.weight" in caught.value.unexpected and caught.value.missing == ()


def test_transformers_names_in_a_segment_anything_file_are_refused(single):
    layout = to_segment_anything(single.state_dict())
    layout["image_encoder.layers.0.layer_norm1.weight"] = layout.pop("image_encoder.blocks.0.norm1.weight")
    with pytest.raises(InputError, match="transformers-layout"):
        from_segment_anything(layout)


def test_pickled_objects_are_refused(tmp_path, single):
    layout = to_segment_anything(single.state_dict()) | {"note": Fraction(1, 3)}
    with pytest.raises(InputError, match="pickled Python objects"):
        load_sam_checkpoint(save(layout, tmp_path), SAM_TINY)


def test_wrong_prefix_says_what_the_file_holds(tmp_path, single):
    path = save(to_segment_anything(single.state_dict()), tmp_path)
    with pytest.raises(InputError, match=r"no tensors under prefix 'model\.visual_model\.'.*image_encoder"):
        load_sam_checkpoint(path, SAM_TINY, prefix="model.visual_model.")


def test_missing_file_names_the_expected_path(tmp_path):
    with pytest.raises(MissingAssetError, match="SAM checkpoint not found") as caught:
        load_sam_checkpoint(tmp_path / "sam" / "sam_vit_h_4b8939.pth", SAM_TINY)
    assert caught.value.expected == tmp_path / "sam" / "sam_vit_h_4b8939.pth"


def test_strict_helper_lists_every_problem():
    module = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    state = {"0.weight": torch.zeros(3, 2), "0.bias": torch.zeros(4)} | {f"x{i}": torch.zeros(1) for i in range(25)}
    with pytest.raises(CheckpointMismatch, match=r"25 unexpected: x0, .*x19, \.\.\. and 5 more") as caught:
        load_state_dict_strict(module, state, "test weights")
    assert caught.value.missing == ("1.weight", "1.bias")
    assert caught.value.mismatched == (("0.bias", (3,), (4,)),)
    assert str(caught.value).startswith("test weights does not match the model")


def test_preprocess_normalises_then_pads_bottom_right():
    parts = SamParts(SAM_TINY)
    image = np.random.default_rng(3).integers(0, 256, (1, S, 96, 3), dtype=np.uint8)  # longest side already S
    pixels = parts.preprocess(image)
    assert pixels.shape == (1, 3, S, S) and pixels.dtype == torch.float32
    y, x = 17, 41
    expected = (torch.tensor(image[0, y, x], dtype=torch.float32) - torch.tensor(PIXEL_MEAN)) / torch.tensor(PIXEL_STD)
    torch.testing.assert_close(pixels[0, :, y, x], expected, rtol=0, atol=1e-6)
    assert torch.count_nonzero(pixels[..., 96:]) == 0


def test_preprocess_resizes_the_longest_side():
    parts = SamParts(SAM_TINY)
    image = np.full((2, 40, 64, 3), (200, 100, 50), dtype=np.uint8)  # 64 -> 128, 40 -> 80
    pixels = parts.preprocess(torch.from_numpy(image))
    assert pixels.shape == (2, 3, S, S)
    expected = (torch.tensor([200.0, 100.0, 50.0]) - torch.tensor(PIXEL_MEAN)) / torch.tensor(PIXEL_STD)
    torch.testing.assert_close(pixels[:, :, :80, :], expected.view(1, 3, 1, 1).expand(2, 3, 80, S),
                               rtol=0, atol=1e-4)
    assert torch.count_nonzero(pixels[:, :, 80:, :]) == 0
    with pytest.raises(InputError, match="uint8"):
        parts.preprocess(image.astype(np.float32))
    with pytest.raises(InputError, match=r"\(B, H, W, 3\)"):
        parts.preprocess(image[0])


def test_decode_shapes_and_upsampling(single):
    with torch.no_grad():
        embeddings = single.encode_images(single.preprocess(images(3)))
        low = single.decode("mask_decoder", embeddings, torch.randn(3, 1, C))
        two_tokens = single.decode("mask_decoder", embeddings, torch.randn(3, 2, C))
        full = single.upsample(low)
    assert embeddings.shape == (3, C, s, s)
    assert low.shape == two_tokens.shape == (3, 4 * s, 4 * s) == (3, SAM_TINY.low_res_size, SAM_TINY.low_res_size)
    assert full.shape == (3, S, S)
    with pytest.raises(InputError, match="prompt_tokens"):
        single.decode("mask_decoder", embeddings, torch.randn(2, 1, C))
    with pytest.raises(InputError, match="unknown mask decoder"):
        single.decode("human_mask_decoder", embeddings, torch.randn(3, 1, C))


def test_masks_depend_on_the_prompt_token_and_the_image(single):
    with torch.no_grad():
        embeddings = single.encode_images(single.preprocess(images(2)))
        token = torch.randn(1, 1, C, generator=torch.Generator().manual_seed(4))
        other = torch.randn(1, 1, C, generator=torch.Generator().manual_seed(5))
        same_image = single.decode("mask_decoder", embeddings[:1].expand(2, -1, -1, -1), torch.cat([token, other]))
        same_token = single.decode("mask_decoder", embeddings, token.expand(2, -1, -1))
    assert not torch.allclose(same_image[0], same_image[1], atol=1e-3)
    assert not torch.allclose(same_token[0], same_token[1], atol=1e-3)


def test_image_positional_embedding_is_segment_anythings_dense_pe(single):
    gaussian = single.prompt_encoder.shared_embedding.positional_embedding.detach()
    centres = (torch.arange(s, dtype=torch.float32) + 0.5) / s
    y, x = 5, 2  # x is the first coordinate, as in segment_anything's PositionEmbeddingRandom
    angle = 2 * math.pi * ((2 * centres[x] - 1) * gaussian[0] + (2 * centres[y] - 1) * gaussian[1])
    with torch.no_grad():
        encoded = single.image_positional_embedding()
    assert encoded.shape == (1, C, s, s)
    torch.testing.assert_close(encoded[0, :, y, x], torch.cat([angle.sin(), angle.cos()]), rtol=0, atol=1e-5)


def _sa_linear(w, name, x):
    return torch.nn.functional.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])


def _sa_layer_norm(w, name, x, eps=1e-5):  # nn.LayerNorm's default eps, as in segment_anything's two-way blocks
    return torch.nn.functional.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps)


def _sa_attention(w, name, query, key, value, heads):
    query, key, value = (_sa_linear(w, f"{name}.{proj}", x)
                         for proj, x in (("q_proj", query), ("k_proj", key), ("v_proj", value)))
    batch, tokens, width = query.shape
    split = lambda x: x.reshape(batch, x.shape[1], heads, width // heads).transpose(1, 2)  # noqa: E731
    weights = torch.softmax(split(query) @ split(key).transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
    return _sa_linear(w, f"{name}.out_proj", (weights @ split(value)).transpose(1, 2).reshape(batch, tokens, width))


def _sa_two_way_layer(w, name, queries, keys, token_pe, key_pe, heads, first):
    if first:  # the first layer skips the token positional encoding in self-attention
        queries = _sa_attention(w, f"{name}.self_attn", queries, queries, queries, heads)
    else:
        q = queries + token_pe
        queries = queries + _sa_attention(w, f"{name}.self_attn", q, q, queries, heads)
    queries = _sa_layer_norm(w, f"{name}.norm1", queries)
    attended = _sa_attention(w, f"{name}.cross_attn_token_to_image", queries + token_pe, keys + key_pe, keys, heads)
    queries = _sa_layer_norm(w, f"{name}.norm2", queries + attended)
    hidden = torch.relu(_sa_linear(w, f"{name}.mlp.lin1", queries))
    queries = _sa_layer_norm(w, f"{name}.norm3", queries + _sa_linear(w, f"{name}.mlp.lin2", hidden))
    attended = _sa_attention(w, f"{name}.cross_attn_image_to_token", keys + key_pe, queries + token_pe, queries, heads)
    return queries, _sa_layer_norm(w, f"{name}.norm4", keys + attended)


def _sa_mlp(w, name, x, depth=3):
    for index in range(depth):
        x = _sa_linear(w, f"{name}.layers.{index}", x)
        x = torch.relu(x) if index < depth - 1 else x
    return x


def _sa_dense_pe(w, side):
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    gaussian = w["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    angle = 2 * math.pi * ((2 * torch.stack([x, y], -1) - 1) @ gaussian)
    return torch.cat([angle.sin(), angle.cos()], dim=-1).permute(2, 0, 1)  # (C, s, s)


def _sa_decode(w, embeddings, tokens, spec):
    """segment_anything's MaskDecoder.predict_masks with the LISA prompt, written from sa-named tensors."""
    d, count, channels, side = "mask_decoder", *embeddings.shape[:3]
    output_tokens = torch.cat([w[f"{d}.iou_token.weight"], w[f"{d}.mask_tokens.weight"]])
    token_pe = torch.cat([output_tokens.expand(count, -1, -1), tokens], dim=1)
    image = embeddings + w["prompt_encoder.no_mask_embed.weight"].view(1, channels, 1, 1)
    keys = image.flatten(2).transpose(1, 2)
    key_pe = _sa_dense_pe(w, side).flatten(1).T.expand(count, -1, -1)
    queries = token_pe
    for index in range(spec.decoder_depth):
        queries, keys = _sa_two_way_layer(w, f"{d}.transformer.layers.{index}", queries, keys, token_pe, key_pe,
                                          spec.decoder_heads, first=index == 0)
    attended = _sa_attention(w, f"{d}.transformer.final_attn_token_to_image", queries + token_pe, keys + key_pe,
                             keys, spec.decoder_heads)
    queries = _sa_layer_norm(w, f"{d}.transformer.norm_final_attn", queries + attended)
    up = torch.nn.functional.conv_transpose2d(keys.transpose(1, 2).reshape(count, channels, side, side),
                                              w[f"{d}.output_upscaling.0.weight"], w[f"{d}.output_upscaling.0.bias"], 2)
    up = torch.nn.functional.gelu(_sa_layer_norm(w, f"{d}.output_upscaling.1", up.permute(0, 2, 3, 1), 1e-6)
                                  .permute(0, 3, 1, 2))
    up = torch.nn.functional.gelu(torch.nn.functional.conv_transpose2d(
        up, w[f"{d}.output_upscaling.3.weight"], w[f"{d}.output_upscaling.3.bias"], 2))
    masks = spec.num_multimask_outputs + 1
    hyper = torch.stack([_sa_mlp(w, f"{d}.output_hypernetworks_mlps.{i}", queries[:, 1 + i]) for i in range(masks)], 1)
    return (hyper @ up.flatten(2)).reshape(count, masks, 4 * side, 4 * side)[:, 0]  # single-mask output: token 0


def test_decode_matches_segment_anything_math_on_sa_named_tensors(single):
    """An independent re-statement of segment_anything's decoder, fed the converted tensors by their sa names:
    this checks the renaming (norm order, MLP layer order, attention roles), the dense PE and the LISA prompt."""
    layout = to_segment_anything(single.state_dict())
    generator = torch.Generator().manual_seed(6)
    embeddings, tokens = torch.randn(3, C, s, s, generator=generator), torch.randn(3, 2, C, generator=generator)
    with torch.no_grad():
        ours = single.decode("mask_decoder", embeddings, tokens)
        reference = _sa_decode(layout, embeddings, tokens, SAM_TINY)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


def _sa_layer_norm_2d(w, name, x):  # segment_anything's LayerNorm2d: over channels of (B, C, H, W), eps 1e-6
    return _sa_layer_norm(w, name, x.permute(0, 2, 3, 1), 1e-6).permute(0, 3, 1, 2)


def _sa_global_block(w, name, x, heads):
    """One global-attention ViT block with decomposed relative positions (q and k grids of equal size)."""
    batch, height, width, dim = x.shape
    head = dim // heads
    qkv = _sa_linear(w, f"{name}.attn.qkv", _sa_layer_norm(w, f"{name}.norm1", x, 1e-6))
    qkv = qkv.reshape(batch, height * width, 3, heads, head).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, -1, height * width, head)
    offsets = lambda n: torch.arange(n)[:, None] - torch.arange(n)[None, :] + n - 1  # noqa: E731
    grid_q = q.reshape(-1, height, width, head)
    rel_h = torch.einsum("bhwc,hkc->bhwk", grid_q, w[f"{name}.attn.rel_pos_h"][offsets(height)])
    rel_w = torch.einsum("bhwc,wkc->bhwk", grid_q, w[f"{name}.attn.rel_pos_w"][offsets(width)])
    logits = (q * head ** -0.5) @ k.transpose(-1, -2)
    logits = logits.view(-1, height, width, height, width) + rel_h[..., :, None] + rel_w[..., None, :]
    out = logits.view(-1, height * width, height * width).softmax(-1) @ v
    out = out.view(batch, heads, height, width, head).permute(0, 2, 3, 1, 4).reshape(batch, height, width, dim)
    x = x + _sa_linear(w, f"{name}.attn.proj", out)
    hidden = torch.nn.functional.gelu(_sa_linear(w, f"{name}.mlp.lin1", _sa_layer_norm(w, f"{name}.norm2", x, 1e-6)))
    return x + _sa_linear(w, f"{name}.mlp.lin2", hidden)


def test_encoder_matches_segment_anything_math_on_sa_named_tensors(single):
    """Patch embedding, the global block and the neck, re-stated from sa-named tensors (checks norm and neck order)."""
    layout, seen = to_segment_anything(single.state_dict()), {}
    hooks = [module.register_forward_hook(lambda m, args, out, key=key: seen.__setitem__(key, (args[0], out)))
             for key, module in (("block0", single.image_encoder.layers[0]), ("block1", single.image_encoder.layers[1]),
                                 ("neck", single.image_encoder.neck))]
    pixels = single.preprocess(images(1))
    with torch.no_grad():
        single.encode_images(pixels)
        patches = torch.nn.functional.conv2d(pixels, layout["image_encoder.patch_embed.proj.weight"],
                                             layout["image_encoder.patch_embed.proj.bias"], stride=SAM_TINY.patch_size)
        tokens = patches.permute(0, 2, 3, 1) + layout["image_encoder.pos_embed"]
        block = _sa_global_block(layout, "image_encoder.blocks.1", seen["block1"][0], SAM_TINY.num_heads)
        neck = torch.nn.functional.conv2d(seen["neck"][0].permute(0, 3, 1, 2), layout["image_encoder.neck.0.weight"])
        neck = _sa_layer_norm_2d(layout, "image_encoder.neck.1", neck)
        neck = torch.nn.functional.conv2d(neck, layout["image_encoder.neck.2.weight"], padding=1)
        neck = _sa_layer_norm_2d(layout, "image_encoder.neck.3", neck)
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(seen["block0"][0], tokens, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(seen["block1"][1], block, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(seen["neck"][1], neck, rtol=1e-4, atol=1e-4)


def test_presets_build_with_the_released_shapes():
    with torch.device("meta"):  # no memory: shapes only
        for spec in SAM_SPECS.values():
            parts = SamParts(spec)
            layout = to_segment_anything(parts.state_dict())
            head = spec.hidden_size // spec.num_heads
            side = spec.embedding_size
            glob, local = spec.global_attn_indexes[0], 0
            assert layout["image_encoder.pos_embed"].shape == (1, side, side, spec.hidden_size)
            assert layout[f"image_encoder.blocks.{glob}.attn.rel_pos_h"].shape == (2 * side - 1, head)
            assert layout[f"image_encoder.blocks.{local}.attn.rel_pos_w"].shape == (2 * spec.window_size - 1, head)
            assert f"image_encoder.blocks.{spec.depth - 1}.mlp.lin2.weight" in layout
    vit_h = sam_config(SAM_SPECS["vit_h"])
    assert (vit_h.vision_config.hidden_size, vit_h.vision_config.num_hidden_layers) == (1280, 32)
    assert list(vit_h.vision_config.global_attn_indexes) == [7, 15, 23, 31]
    assert vit_h.prompt_encoder_config.hidden_size == vit_h.mask_decoder_config.hidden_size == 256
    assert SAM_SPECS["vit_h"].embedding_size == 64 and SAM_SPECS["vit_h"].low_res_size == 256
