"""SD2 inpainting with GenZI's dynamic masks, through diffusers' ``StableDiffusionInpaintPipeline``.

Model folder
    ``<models>/sd2-inpainting/``: a diffusers folder (``model_index.json``, ``unet/``, ``vae/``,
    ``text_encoder/``, ``tokenizer/``, ``scheduler/``) of Stable Diffusion 2 inpainting. The original
    hub repository (stabilityai/stable-diffusion-2-inpainting) was withdrawn in November 2025; the
    community mirror sd2-community/stable-diffusion-2-inpainting holds the same files (licence
    CreativeML Open RAIL++-M). Download it yourself; nothing is fetched at run time.

Sampling (GenZI's settings)
    DPM-Solver++ multistep (``algorithm_type="dpmsolver++"``, from the folder's scheduler config), 50
    steps, guidance 7.5, fp16 on CUDA (fp32 on CPU), one seeded generator per image. The text is
    ``prefix, prompt, suffix`` and the negative prompt is the user's plus the fixed list below.

Dynamic mask (stage 0)
    The mask starts empty. After each of the first half of the steps, the pipeline's step-end callback
    turns the captured cross-attention of the human tokens into a new mask (``engine.genzi.masks``),
    encodes ``image * (mask < 0.5)`` with the VAE and hands both to the pipeline as its ``mask`` and
    ``masked_image_latents``: the UNet's 9-channel input of the next step uses them. From the middle
    step on, capture stops and the last mask stays. Stage 1 passes fixed masks instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import InputError, MissingAssetError
from engine.genzi import masks as mask_ops
from engine.paths import models_dir as default_models_dir

SD2_INPAINTING_FOLDER = "sd2-inpainting"
SD2_HINT = ("Download the Stable Diffusion 2 inpainting diffusers folder (the community mirror "
            "sd2-community/stable-diffusion-2-inpainting; the stabilityai repository was withdrawn) and place it there")
MAX_TOKENS = 77
HUMAN_WORDS: tuple[str, ...] = ("person", "woman", "man", "people", "human", "girl", "boy", "child", "lady", "guy")
NEGATIVE_TERMS: tuple[str, ...] = (
    "low quality", "low resolution", "blurry", "distorted", "deformed body", "bad anatomy", "missing limbs",
    "extra limbs", "duplicate person", "multiple people", "text", "watermark", "cropped body")


@dataclass(frozen=True)
class InpaintConfig:
    """Inpainting settings (GenZI's values by default).

    prefix / suffix: joined with the prompt by ", " (REFERENCE.md: "a woman, {prompt}, wearing ..., full body").
    dynamic_fraction: the share of the steps during which the mask follows the attention.
    batch_size: images per pipeline call; None sizes it to the free GPU memory (1 on CPU).
    """

    steps: int = 50
    guidance: float = 7.5
    prefix: str = "a person"
    suffix: str = "full body"
    negative: tuple[str, ...] = NEGATIVE_TERMS
    dynamic_fraction: float = 0.5
    quantile: float = mask_ops.MASK_QUANTILE
    average_steps: int = mask_ops.AVERAGE_STEPS
    image_size: int = 512
    seed: int = 1
    batch_size: int | None = None
    bytes_per_image: int = 3 * 1024 ** 3  # fp16 SD2 at 512 px with guidance, measured with headroom


@dataclass(frozen=True)
class InpaintResult:
    """N inpaintings.

    images: (N, H, W, 3) uint8.  masks: (N, H, W) bool, the mask in force at the last step.
    attention: (S, N, r, r) float32 attention maps (human tokens summed, last steps averaged) that made
    each of the S dynamic masks, empty for fixed masks.  text / negative: the prompts given to the model.
    token_indices: positions of the human tokens in the tokenized text (0 is the start token).
    """

    images: np.ndarray
    masks: np.ndarray
    attention: np.ndarray
    text: str
    negative: str
    token_indices: tuple[int, ...]


def sd2_folder(models: Path | str | None = None) -> Path:
    return default_models_dir(models) / SD2_INPAINTING_FOLDER


def load_inpainting_pipeline(models: Path | str | None = None, device: torch.device | str = "cpu",
                             folder: Path | None = None):
    """The diffusers pipeline from the local folder, DPM-Solver++ scheduler, fp16 on CUDA."""
    folder = Path(folder) if folder is not None else sd2_folder(models)
    if not (folder / "model_index.json").is_file():
        raise MissingAssetError("Stable Diffusion 2 inpainting folder", folder / "model_index.json", SD2_HINT)
    from diffusers import StableDiffusionInpaintPipeline  # heavy: only with a folder

    device = torch.device(device)
    pipe = StableDiffusionInpaintPipeline.from_pretrained(folder, torch_dtype=pipeline_dtype(device), safety_checker=None,
                                                          requires_safety_checker=False, local_files_only=True)
    return configure_pipeline(pipe, device)


def pipeline_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def configure_pipeline(pipe, device):
    """GenZI's sampler on a loaded pipeline: DPM-Solver++ from its scheduler config, on ``device``, quiet."""
    from diffusers import DPMSolverMultistepScheduler

    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(torch.device(device), pipeline_dtype(device))


def build_text(prompt: str, config: InpaintConfig) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty; describe what the person does, e.g. 'sitting on the sofa reading'")
    return ", ".join(part.strip() for part in (config.prefix, prompt, config.suffix) if part and part.strip())


def check_length(tokenizer, text: str, what: str = "the prompt") -> list[int]:
    """The token ids of ``text`` (with start and end tokens); InputError if the model would truncate it."""
    ids = tokenizer(text, truncation=False).input_ids
    if len(ids) > MAX_TOKENS:
        raise InputError(f"{what} is {len(ids)} tokens long (start and end tokens, prefix and suffix included); the "
                         f"text encoder reads {MAX_TOKENS} and would truncate the rest, so shorten it")
    return ids


def human_token_indices(tokenizer, ids: list[int]) -> tuple[int, ...]:
    """Positions of tokens that spell a human word; the start token when none does (GenZI lets a scene
    config name them; here the prefix names the person)."""
    words = [tokenizer.decode([token]).strip().lower() for token in ids]
    found = tuple(index for index, word in enumerate(words) if word in HUMAN_WORDS)
    if not found:
        raise InputError(f"the prompt prefix names no person; it must contain one of {', '.join(HUMAN_WORDS)}")
    return found


def batch_size_for(device: torch.device, config: InpaintConfig) -> int:
    if config.batch_size is not None:
        return max(1, int(config.batch_size))
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(free // config.bytes_per_image))


def _as_images(images) -> torch.Tensor:
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise InputError(f"views must be (N, H, W, 3) uint8 images, got {array.shape} {array.dtype}")
    return torch.from_numpy(array.copy()).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class _DynamicMask:
    """The step-end callback: new masks from the attention during the first part, then frozen."""

    def __init__(self, store, image: torch.Tensor, stop: int, config: InpaintConfig, generator):
        self.store, self.image, self.stop, self.config, self.generator = store, image, stop, config, generator
        self.attention: list[torch.Tensor] = []
        self.mask = torch.zeros(image.shape[0], image.shape[2], image.shape[3], dtype=torch.bool)

    def __call__(self, pipe, step: int, timestep, tensors: dict) -> dict:
        if step >= self.stop:
            return {}
        self.store.end_step()
        attention = mask_ops.attention_map(self.store.history, self.config.average_steps)
        self.attention.append(attention.cpu())
        self.mask = mask_ops.mask_from_attention(attention, self.image.shape[-1], self.config.quantile).cpu()
        if step + 1 == self.stop:
            self.store.active = False  # the last mask stays for the remaining steps
        return dict(zip(("mask", "masked_image_latents"), _mask_latents(pipe, self.image, self.mask, self.generator)))


def _mask_latents(pipe, image: torch.Tensor, mask: torch.Tensor, generator):
    """The pipeline's own conditioning for a mask: (mask at latent size, VAE latents of the kept image)."""
    device, dtype = pipe._execution_device, pipe.unet.dtype
    mask = mask.float()[:, None]
    masked = image * (mask < 0.5)
    return pipe.prepare_mask_latents(mask.to(device, dtype), masked.to(device, dtype), image.shape[0], image.shape[2],
                                     image.shape[3], dtype, device, generator, pipe.do_classifier_free_guidance)


def inpaint(pipe, images, prompt: str, config: InpaintConfig = InpaintConfig(), *, fixed_masks=None,
            negative: str = "", samples_per_view: int = 1, progress=None) -> InpaintResult:
    """Inpaint ``samples_per_view`` people into each (N, H, W, 3) uint8 view.

    Without ``fixed_masks`` (stage 0) the mask is dynamic; with (N, H, W) bool masks (stage 1) it is fixed.
    Results are ordered sample-major: image k * N + v is sample k of view v, made with seed ``seed + k``.
    """
    text = build_text(prompt, config)
    ids = check_length(pipe.tokenizer, text)
    if negative.strip():
        check_length(pipe.tokenizer, negative.strip(), "the negative prompt")
    # The fixed terms come after the user's and are the part the encoder drops if the whole is too long.
    negative_text = ", ".join(part for part in (negative.strip(), *config.negative) if part)
    views = _as_images(images)
    if views.shape[2] != config.image_size or views.shape[3] != config.image_size:
        raise InputError(f"views must be {config.image_size} x {config.image_size}, got {views.shape[2]} x {views.shape[3]}")
    tokens = human_token_indices(pipe.tokenizer, ids)
    jobs = [(sample, view) for sample in range(samples_per_view) for view in range(len(views))]
    batch = batch_size_for(pipe._execution_device, config)
    out_images, out_masks, out_attention = [], [], []
    for start in range(0, len(jobs), batch):
        chunk = jobs[start:start + batch]
        image = views[[view for _, view in chunk]]
        masks = None if fixed_masks is None else torch.as_tensor(np.asarray(fixed_masks))[[view for _, view in chunk]]
        result = _run(pipe, image, masks, text, negative_text, tokens, [config.seed + sample for sample, _ in chunk], config)
        out_images.append(result[0]); out_masks.append(result[1]); out_attention.append(result[2])
        if progress is not None:
            progress(len(chunk))
    attention = np.concatenate(out_attention, axis=1) if fixed_masks is None else np.zeros((0, len(jobs), 0, 0), np.float32)
    return InpaintResult(np.concatenate(out_images), np.concatenate(out_masks), attention, text, negative_text, tokens)


def _run(pipe, image, fixed, text, negative_text, tokens, seeds, config):
    device = pipe._execution_device
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    count = image.shape[0]
    store = mask_ops.AttentionStore(tokens, guidance=config.guidance > 1.0)
    original = mask_ops.install_capture(pipe.unet, store) if fixed is None else None
    callback = None
    try:
        if fixed is None:
            stop = int(config.steps * config.dynamic_fraction)
            callback = _DynamicMask(store, image, stop, config, generators)
            start_mask = torch.zeros(count, 1, *image.shape[2:])
        else:
            start_mask = fixed.float()[:, None]
        hooks = {} if callback is None else {"callback_on_step_end": callback,
                                             "callback_on_step_end_tensor_inputs": ["mask", "masked_image_latents"]}
        output = pipe(prompt=[text] * count, negative_prompt=[negative_text] * count, image=(image + 1) / 2,
                      mask_image=start_mask, height=image.shape[2], width=image.shape[3],
                      num_inference_steps=config.steps, guidance_scale=config.guidance, generator=generators,
                      output_type="np", **hooks)
    finally:
        if original is not None:
            pipe.unet.set_attn_processor(original)
    images = (np.clip(output.images, 0, 1) * 255).round().astype(np.uint8)
    if fixed is None:
        final = callback.mask.numpy()
        attention = torch.stack(callback.attention).numpy() if callback.attention else np.zeros((0, count, 0, 0), np.float32)
    else:
        final, attention = fixed.numpy().astype(bool), None
    return images, final, attention
