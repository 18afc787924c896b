"""Dynamic masks: what the processors capture, the mask arithmetic on synthetic attention, the dilation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from engine.errors import InputError
from engine.genzi import masks
from engine.genzi.masks import AttentionStore, attention_map, dilate, install_capture, mask_from_attention

EXPECTED_LAYERS = [f"down_blocks.2.attentions.{i}.transformer_blocks.0.attn2.processor" for i in (0, 1)] + \
                  [f"up_blocks.1.attentions.{i}.transformer_blocks.0.attn2.processor" for i in (0, 1, 2)]


def _manual_probabilities(unet, name, inputs):
    """softmax(q k^T / sqrt(d)) per head from the layer's own projections, computed here by hand."""
    module = unet.get_submodule(name.removesuffix(".processor"))
    hidden, context = inputs[name]
    heads = module.heads
    q, k = module.to_q(hidden), module.to_k(context)
    batch, queries, width = q.shape
    q = q.reshape(batch, queries, heads, width // heads).permute(0, 2, 1, 3)
    k = k.reshape(batch, k.shape[1], heads, width // heads).permute(0, 2, 1, 3)
    return torch.softmax(q @ k.transpose(-1, -2) / (width // heads) ** 0.5, dim=-1)  # (B, heads, N, 77)


def test_capture_stores_exactly_the_named_blocks_for_the_chosen_tokens(tiny_pipe):
    unet = tiny_pipe.unet
    inputs = {}
    hooks = [unet.get_submodule(name.removesuffix(".processor")).register_forward_pre_hook(
        lambda module, args, kwargs, name=name: inputs.__setitem__(name, (args[0] if args else kwargs["hidden_states"],
                                                                           kwargs["encoder_hidden_states"])),
        with_kwargs=True) for name in EXPECTED_LAYERS]
    torch.manual_seed(0)
    sample, context = torch.randn(2, 9, 64, 64), torch.randn(2, 77, 32)  # [unconditional, text] at 512 px
    with torch.no_grad():
        plain = unet(sample, 10, context).sample
        store = AttentionStore(token_indices=(2, -1 + 77, 0), guidance=True)
        original = install_capture(unet, store)
        captured = unet(sample, 10, context).sample
        unet.set_attn_processor(original)
    for hook in hooks:
        hook.remove()
    assert store.layers == EXPECTED_LAYERS  # in call order: down_blocks.2 then up_blocks.1, nothing else
    torch.testing.assert_close(captured, plain)  # capturing changes nothing
    for name, maps in zip(store.layers, store.current):
        assert maps.shape[2] == 256  # 16 x 16 queries
        expected = _manual_probabilities(unet, name, inputs)[1:, :, :, [2, 76, 0]]  # the text half, chosen tokens
        torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    store.end_step()
    assert store.history[0].shape == (1, 16, 16, 3)
    mean = torch.stack([maps.mean(1) for maps in store.current or []]) if store.current else None
    assert mean is None and store.current == []


def test_a_unet_without_the_blocks_is_refused():
    class Fake:
        attn_processors = {"down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor": object()}

    with pytest.raises(InputError, match="no cross-attention layers in down_blocks.2, up_blocks.1"):
        install_capture(Fake(), AttentionStore((1,)))


def test_attention_map_averages_the_last_three_steps_and_sums_tokens():
    steps = [torch.full((1, 2, 2, 2), float(value)) for value in (100, 1, 2, 3)]
    steps[-1][..., 1] = 10.0
    got = attention_map(steps)
    # Steps 1, 2, 3: token 0 averages (1 + 2 + 3) / 3 = 2, token 1 (1 + 2 + 10) / 3; summed.
    torch.testing.assert_close(got, torch.full((1, 2, 2), 2.0 + 13 / 3))
    torch.testing.assert_close(attention_map(steps[:1]), torch.full((1, 2, 2), 200.0))


def test_pool_counts_zero_padding_at_the_borders():
    corner = torch.zeros(1, 4, 4)
    corner[0, 0, 0] = 9.0
    pooled = torch.nn.functional.avg_pool2d(corner[:, None], 3, stride=1, padding=1, count_include_pad=True)[0, 0]
    assert pooled[0, 0] == pytest.approx(1.0)  # 9 / 9, not 9 / 4
    # mask_from_attention with an identity-sized upsample keeps exactly the pooled ranking.
    mask = mask_from_attention(corner, 4, quantile=0.7)
    assert mask[0].tolist() == (pooled >= torch.quantile(pooled.flatten(), 0.7)).tolist()


def test_synthetic_attention_gives_exactly_the_top_30_percent():
    torch.manual_seed(3)
    attention = torch.rand(2, 16, 16)
    mask = mask_from_attention(attention, 512)
    assert mask.shape == (2, 512, 512) and mask.dtype == torch.bool
    pooled = torch.nn.functional.avg_pool2d(attention[:, None], 3, 1, 1)
    upsampled = torch.nn.functional.interpolate(pooled, size=(512, 512), mode="bicubic")[:, 0].double().numpy()
    for image in range(2):
        values = upsampled[image].ravel()
        # numpy's linear 0.7 quantile of 512^2 values lies between sorted[183500] and sorted[183501]:
        # 512^2 - 183501 = 78643 pixels are at or above it, plus any exact ties with sorted[183501].
        threshold = np.quantile(values, 0.7)
        ties = int((np.sort(values)[:183501] == np.sort(values)[183501]).sum())
        assert mask[image].sum() == (values >= threshold).sum() == 78643 + ties
        assert values[mask[image].numpy().ravel()].min() >= values[~mask[image].numpy().ravel()].max()
    # Attention growing to the right masks the right of the image.
    ramp = torch.arange(16.0).expand(1, 16, 16)
    region = mask_from_attention(ramp, 512)[0]
    assert region[256, 400] and not region[256, 100]


def test_dilation_equals_eight_11x11_dilations():
    rng = np.random.default_rng(0)
    silhouettes = rng.random((2, 200, 180)) > 0.995
    expected = np.stack([ndimage.binary_dilation(image, structure=np.ones((11, 11), bool), iterations=8)
                         for image in silhouettes])
    got = dilate(torch.from_numpy(silhouettes)).numpy()
    np.testing.assert_array_equal(got, expected)
    assert masks.DILATE_KERNEL == 11 and masks.DILATE_ITERATIONS == 8
