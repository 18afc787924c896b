"""Inpainting through diffusers with the tiny SD2-layout folder: the dynamic mask reaches the UNet and
freezes after half the steps, fixed masks stay fixed, settings are GenZI's, bad input is refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import InputError, MissingAssetError
from engine.genzi import inpaint as inpaint_module
from engine.genzi.inpaint import InpaintConfig, inpaint, load_inpainting_pipeline
from engine.genzi.masks import mask_from_attention

FAST = InpaintConfig(steps=6, image_size=256, batch_size=2, negative=("blurry",), prefix="a person", suffix="full body")


def _views(count: int, size: int = 256) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def _record_unet_masks(unet):
    seen = []
    handle = unet.register_forward_pre_hook(lambda module, args: seen.append(args[0][:, 4].detach().clone()))
    return seen, handle


def test_loader_uses_dpm_solver_plus_plus_and_the_folder(tiny_pipe):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionInpaintPipeline

    assert isinstance(tiny_pipe, StableDiffusionInpaintPipeline)
    assert isinstance(tiny_pipe.scheduler, DPMSolverMultistepScheduler)
    assert tiny_pipe.scheduler.config.algorithm_type == "dpmsolver++"
    assert tiny_pipe.unet.dtype == torch.float32  # fp16 only on CUDA
    assert InpaintConfig().steps == 50 and InpaintConfig().guidance == 7.5 and InpaintConfig().dynamic_fraction == 0.5


@pytest.mark.slow
def test_dynamic_mask_reaches_the_unet_and_freezes_after_half_the_steps(tiny_pipe):
    seen, handle = _record_unet_masks(tiny_pipe.unet)
    try:
        result = inpaint(tiny_pipe, _views(2), "sitting on the sofa reading", FAST)
    finally:
        handle.remove()
    assert result.images.shape == (2, 256, 256, 3) and result.images.dtype == np.uint8
    assert result.text == "a person, sitting on the sofa reading, full body"
    assert result.negative == "blurry"
    assert result.token_indices == (2,)  # <start> a person: "person" is token 2
    assert len(seen) == 6 and seen[0].shape == (4, 32, 32)  # 6 steps, [unconditional, text] x 2 views
    assert (seen[0] == 0).all()  # the mask starts empty
    assert result.attention.shape == (3, 2, 8, 8)  # 3 = half of 6 steps; 8 x 8 at 256 px (16 x 16 at 512)
    for step in range(3):
        expected = mask_from_attention(torch.from_numpy(result.attention[step]), 256).float()[:, None]
        expected = torch.nn.functional.interpolate(expected, size=(32, 32))[:, 0]
        torch.testing.assert_close(seen[step + 1], torch.cat([expected, expected]))  # both guidance halves
    for later in seen[4:]:
        torch.testing.assert_close(later, seen[3])  # frozen: the mask of the last dynamic step
    assert (result.masks.mean((1, 2)) > 0.29).all() and (result.masks.mean((1, 2)) < 0.32).all()
    np.testing.assert_array_equal(result.masks, mask_from_attention(torch.from_numpy(result.attention[-1]), 256).numpy())


@pytest.mark.slow
def test_fixed_masks_stay_fixed_and_samples_use_their_own_seeds(tiny_pipe):
    fixed = np.zeros((1, 128, 128), dtype=bool)
    fixed[0, 32:96, 48:80] = True
    config = InpaintConfig(steps=3, image_size=128, batch_size=2, negative=("blurry",))
    seen, handle = _record_unet_masks(tiny_pipe.unet)
    try:
        result = inpaint(tiny_pipe, _views(1, 128), "lying on the bed", config, fixed_masks=fixed, samples_per_view=2)
    finally:
        handle.remove()
    assert len(seen) == 3
    expected = torch.nn.functional.interpolate(torch.from_numpy(fixed).float()[:, None], size=(16, 16))[:, 0]
    for step in seen:
        torch.testing.assert_close(step, expected.repeat(4, 1, 1))
    assert result.attention.shape[0] == 0 and result.masks.shape == (2, 128, 128)
    assert not np.array_equal(result.images[0], result.images[1])  # seeds 1 and 2


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(MissingAssetError, match="Stable Diffusion 2 inpainting folder not found") as error:
        load_inpainting_pipeline(tmp_path)
    assert "sd2-inpainting" in str(error.value) and "sd2-community" in str(error.value)


@pytest.mark.parametrize("prompt, message", [
    ("", "the prompt is empty"),
    ("   ", "the prompt is empty"),
    ("sitting " * 80, r"tokens long .* would truncate the rest"),
])
def test_bad_prompts_are_refused(tiny_pipe, prompt, message):
    with pytest.raises(InputError, match=message):
        inpaint(tiny_pipe, _views(1), prompt, FAST)


def test_prefix_without_a_person_and_bad_views_are_refused(tiny_pipe):
    with pytest.raises(InputError, match="names no person"):
        inpaint(tiny_pipe, _views(1), "sitting", InpaintConfig(steps=2, image_size=256, prefix="a photo of", negative=()))
    with pytest.raises(InputError, match="must be 256 x 256"):
        inpaint(tiny_pipe, _views(1, 128), "sitting", FAST)
    with pytest.raises(InputError, match="uint8"):
        inpaint(tiny_pipe, _views(1).astype(np.float32), "sitting", FAST)
    with pytest.raises(InputError, match="negative prompt is"):
        inpaint(tiny_pipe, _views(1), "sitting", FAST, negative="blurry " * 80)


def test_batch_size_is_one_on_cpu_unless_given():
    assert inpaint_module.batch_size_for(torch.device("cpu"), InpaintConfig()) == 1
    assert inpaint_module.batch_size_for(torch.device("cpu"), InpaintConfig(batch_size=3)) == 3
