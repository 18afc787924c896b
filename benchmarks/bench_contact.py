"""Benchmark: per-request latency of InteractVLM human contact, stage by stage, with and without the
cached body embeddings; and the full-size architecture with random bf16 weights on a GPU.

    python benchmarks/bench_contact.py [--requests N] [--new-tokens T] [--batch-size B] [--device cpu]
    python benchmarks/bench_contact.py --full [--preset hcontact] [--device cuda] [--requests N]

What is measured, per request (median over ``--requests`` after 2 warm-ups):
- VLM: CLIP, the prompt's prefill and ``T`` greedy decoding steps (``InteractVLMPredictor.generate``).
- SAM encode: the 4 body renders through SAM's image encoder (``body_views``). Cached, this is a lookup;
  uncached (``cache_body=False``, the baseline) it re-reads the renders from the disk cache and
  re-encodes the 4 views every request, and Φ's per-view gates are recomputed as well.
- decode: Γ, Φ, SAM's mask decoder on the 4 views (each with all 4 view tokens, as the release decodes)
  and the upsample to the render size (``localise``).
- lift: the 4 mask logits to per-vertex contact (``rll.lift_logits``), including the copy to the host.
- end to end: ``predict_human_contact`` (adds image checks, label resolution and result assembly).

Uncached, the lift also rebuilds its pixel -> vertex plan, since every request gets fresh views.

Default run: the untrained, seeded tiny preset (tiny-hcontact, saved in the released layout and
loaded back through ``load_predictor``) on CPU; the figure of interest is the ratio uncached / cached.
It also compares ``predict_human_contact_batch`` of B requests with B single calls. As loaded, the
tiny folder would decode the released default of 64 tokens; the answer length is set to ``T`` as below.

``--full`` (needs CUDA): the released architecture, Llama-2 13B (hidden 5120, 40 layers, vocabulary
32003) + CLIP ViT-L/14 at 224 + SAM ViT-H at 1024, with random weights made in bf16 directly on the
GPU (never in fp32, never on the host). Target on an H200/H100: <= 0.5 s per image for human contact
with cached body embeddings; the peak GPU memory is printed too. A random model never ends its answer,
so every answer is exactly ``T`` tokens (default 24, about the released answer "The contacting body
parts are ..., and the contact region is [SEG]." in Llama tokens); its last token is made ``[SEG]``
(a logits hook, ``ForcedContactToken``) so that every request really decodes and lifts a mask: with no
contact token the predictor reports no mask and skips both. The prompt is tokenised with the
studio's word tokenizer (a Llama tokenizer is not shipped), so the text part of the prefill is a few
dozen tokens shorter than with Llama's; the 256 image tokens dominate it either way.
``--full --device cpu --preset tiny-hcontact`` runs the same path at test size (a smoke test).

Prints figures only; nothing here asserts on timings.
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

if "STUDIO_VAR" not in os.environ:  # keep the render cache out of var/ and start without one
    os.environ["STUDIO_VAR"] = tempfile.mkdtemp(prefix="bench_contact_")
    atexit.register(shutil.rmtree, os.environ["STUDIO_VAR"], ignore_errors=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import rll  # noqa: E402
from engine.body import load_body  # noqa: E402
from engine.contact import prompts  # noqa: E402
from engine.contact.checkpoint import CLIP_FOLDER, LoadedModel, new_model, save_released  # noqa: E402
from engine.contact.predict import MAX_BATCH, InteractVLMPredictor, load_predictor  # noqa: E402
from engine.contact.vlm import tokenize_with_image  # noqa: E402

TARGET_S = 0.5  # per image on an H200/H100, cached body embeddings (the figure)
LLAMA_VOCAB = 32003  # Llama-2's 32000 + [SEG], <im_start>, <im_end>, as LISA resizes it
WARMUPS = 2
BATCH_REPEATS = 3
INIT_STD = 0.02  # Hugging Face's initializer_range for Llama and CLIP
# (image height, width) and object labels the requests cycle through; None is the binary question.
IMAGE_SHAPES = ((480, 640), (640, 480), (512, 512), (720, 1280))
LABELS = ("chair", "bicycle", None, "cup", "bench")
STAGES = ("VLM", "SAM encode", "decode", "lift")
STAGE_NAMES = {"VLM": "VLM: CLIP + prefill + {t} greedy steps", "SAM encode": "SAM encode: 4 body views",
               "decode": "decode: Γ, Φ, mask decoder, upsample", "lift": "lift: 4 views -> {v:,} vertices"}


# ---- helpers -------------------------------------------------------------------------------------------------
def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, function, *args):
    """(milliseconds, result); on CUDA the queued kernels are waited for on both sides."""
    synchronise(device)
    start = time.perf_counter()
    result = function(*args)
    synchronise(device)
    return (time.perf_counter() - start) * 1000, result


def make_requests(count: int, seed: int = 0) -> list[tuple[np.ndarray, str | None]]:
    """Seeded noise images of a few camera-like sizes, each with an object label (or None)."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for shape in IMAGE_SHAPES]
    return [(images[i % len(images)], LABELS[i % len(LABELS)]) for i in range(count)]


class ForcedContactToken:
    """Makes the ``T``-th (last) generated token the contact token by adding 1e4 to its logit at that step;
    the other tokens and every hidden state stay the model's own. Counts steps per ``generate`` call."""

    def __init__(self, predictor: InteractVLMPredictor):
        self.token = predictor.token_ids[predictor.config.token_for["human"]]
        self.predictor, self.step = predictor, 0
        lm = predictor.model.vlm.language_model
        self.handles = [lm.lm_head.register_forward_hook(self._logits),
                        lm.register_forward_pre_hook(self._restart, with_kwargs=True)]

    def _restart(self, module, args, kwargs):
        if kwargs.get("inputs_embeds") is not None:  # generate() starts with the embedded prompt
            self.step = 0

    def _logits(self, module, inputs, logits):
        self.step += 1  # every generate() here runs exactly max_new_tokens steps (random weights never stop early)
        if self.step % self.predictor.config.max_new_tokens == 0:
            logits = logits.clone()
            logits[:, -1, self.token] += 1e4
        return logits

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextmanager
def counting_lm_steps(predictor: InteractVLMPredictor):
    """Counts the language model's forward passes (prefill + one per further token) while inside."""
    calls = []
    handle = predictor.model.vlm.language_model.register_forward_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


def prompt_length(predictor: InteractVLMPredictor, label: str | None) -> int:
    """Prefill tokens of one request: the text tokens plus the image's patch tokens."""
    config = predictor.config
    text = prompts.conversation(prompts.human_question(label), im_start_end=config.use_im_start_end)
    return len(tokenize_with_image(predictor.tokenizer, text)) - 1 + config.vision.num_patches


def set_answer_length(predictor: InteractVLMPredictor, new_tokens: int) -> None:
    """Untrained models never emit </s>, so max_new_tokens is the answer length: make it realistic."""
    predictor.config = replace(predictor.config, max_new_tokens=new_tokens)
    predictor.model.config = predictor.config


def parameter_count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def amount(count: int) -> str:
    """Parameter counts readable at both sizes: 13.02B, 0.32M."""
    return f"{count / 1e9:.2f}B" if count >= 1e8 else f"{count / 1e6:.2f}M"


def gib(count: int) -> str:
    return f"{count / 2**30:.2f} GiB"


# ---- stage timings -------------------------------------------------------------------------------------------
@dataclass
class StageTimes:
    """Per-request milliseconds of each stage, and of whole ``predict_human_contact`` calls."""

    stages: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})
    end_to_end: list[float] = field(default_factory=list)

    def median(self, stage: str) -> float:
        return statistics.median(self.end_to_end if stage == "end to end" else self.stages[stage])

    def stage_sum(self) -> float:
        return sum(self.median(stage) for stage in STAGES)


def one_staged_request(predictor: InteractVLMPredictor, image, label, device) -> dict[str, float]:
    """The stages of ``predict_human_contact_batch`` for one request, each timed on its own."""
    times = {}
    times["VLM"], generation = timed(device, predictor.generate, [image], [prompts.human_question(label)])
    times["SAM encode"], cache = timed(device, predictor.body_views)
    if not generation.tokens[0]:
        raise SystemExit("the answer held no contact token, so nothing would be decoded; check ForcedContactToken")
    times["decode"], logits = timed(device, predictor.localise, "human", generation.hidden[0], cache, "body",
                                    generation.routes[0])
    times["lift"], _ = timed(device, lambda: rll.lift_logits(cache.views, logits[0].cpu()))
    return times


def measure_modes(predictor: InteractVLMPredictor, requests, device) -> dict[bool, StageTimes]:
    """Stage and end-to-end times with (True) and without (False) the body cache.

    The two modes alternate request by request, so that load from other processes, which drifts over
    a run, falls on both alike.
    """
    results = {True: StageTimes(), False: StageTimes()}
    for index, (image, label) in enumerate(requests[:WARMUPS] + requests):
        for cache_body, result in results.items():
            predictor.cache_body = cache_body
            times = one_staged_request(predictor, image, label, device)
            ms, _ = timed(device, predictor.predict_human_contact, image, label)
            if index >= WARMUPS:
                for stage, stage_ms in times.items():
                    result.stages[stage].append(stage_ms)
                result.end_to_end.append(ms)
    predictor.cache_body = True
    return results


def print_stage_table(cached: StageTimes, uncached: StageTimes, new_tokens: int, vertices: int) -> None:
    rows = [(STAGE_NAMES[stage].format(t=new_tokens, v=vertices), stage) for stage in STAGES]
    rows.append(("sum of the stage medians", "sum"))
    rows.append(("request end to end (predict_human_contact)", "end to end"))
    width = max(len(label) for label, _ in rows)
    print(f"  {'stage (median ms per request)':<{width}}  {'cached':>9}  {'uncached':>9}  {'uncached/cached':>15}")
    for label, key in rows:
        hit = cached.stage_sum() if key == "sum" else cached.median(key)
        miss = uncached.stage_sum() if key == "sum" else uncached.median(key)
        # A cached body_views is a lookup of microseconds: a ratio to it would only be noise.
        ratio = f"{miss / hit:>14.2f}x" if hit >= 0.05 else f"{'(a lookup)':>15}"
        print(f"  {label:<{width}}  {hit:>9.1f}  {miss:>9.1f}  {ratio}")
    after_vlm = [sum(times.median(stage) for stage in STAGES[1:]) for times in (cached, uncached)]
    print(f"  total ratio uncached / cached: {uncached.median('end to end') / cached.median('end to end'):.2f}x "
          f"end to end; {after_vlm[1] / after_vlm[0]:.2f}x for the stages after the VLM "
          f"({after_vlm[0]:.1f} ms cached vs {after_vlm[1]:.1f} ms uncached)")


def measure_batching(predictor: InteractVLMPredictor, size: int, repeats: int, device) -> None:
    """``predict_human_contact_batch`` of ``size`` requests vs ``size`` single calls, cached embeddings."""
    size = min(size, MAX_BATCH)
    requests = make_requests(size, seed=1)
    predictor.predict_human_contact_batch(requests)  # warm-up: allocator and kernels at this batch shape
    batched, single = [], []
    for _ in range(repeats):
        batched.append(timed(device, predictor.predict_human_contact_batch, requests)[0])
        single.append(sum(timed(device, predictor.predict_human_contact, *request)[0] for request in requests))
    batched_rate, single_rate = size / statistics.median(batched) * 1000, size / statistics.median(single) * 1000
    print(f"  {size} requests in one predict_human_contact_batch: {statistics.median(batched):.0f} ms "
          f"({batched_rate:.2f} images/s); {size} predict_human_contact calls: {statistics.median(single):.0f} ms "
          f"({single_rate:.2f} images/s); batched / single throughput {batched_rate / single_rate:.2f}x "
          f"(median of {repeats})")


def print_request_setup(predictor: InteractVLMPredictor, requests, args) -> None:
    """Prompt and answer lengths, the answer's counted from the LM's forward passes of one request."""
    with counting_lm_steps(predictor) as calls:
        predictor.predict_human_contact(*requests[0])
    print(f"  prompt {prompt_length(predictor, requests[0][1])} tokens ({predictor.config.vision.num_patches} image "
          f"tokens); answers {args.new_tokens} tokens ({len(calls)} LM forward passes per request, prefill "
          f"included); {args.requests} requests per mode after {WARMUPS} warm-ups")


# ---- the tiny preset (default) -------------------------------------------------------------------------------
def tiny_predictor(device: torch.device, new_tokens: int) -> InteractVLMPredictor:
    """tiny-hcontact saved in the released layout and loaded back through ``load_predictor``."""
    root = Path(os.environ["STUDIO_VAR"]) / "models"
    model, tokenizer = new_model("tiny-hcontact", seed=0)
    save_released(model, tokenizer, root / "interactvlm" / "hcontact", dtype="fp32", clip_folder=root / CLIP_FOLDER)
    predictor = load_predictor(root, "hcontact", dtype="fp32", device=device, body=load_body("openbody"))
    set_answer_length(predictor, new_tokens)
    ForcedContactToken(predictor)
    return predictor


def run_tiny(args, device: torch.device) -> None:
    seconds, predictor = timed(device, tiny_predictor, device, args.new_tokens)
    print(f"\n[tiny] tiny-hcontact on {device} (fp32, {parameter_count(predictor.model):,} parameters, SAM "
          f"{predictor.config.sam} at {predictor.model.resolution} px), open body with "
          f"{predictor.body.num_vertices:,} vertices; built, saved and loaded in {seconds / 1000:.1f} s")
    requests = make_requests(args.requests)
    print_request_setup(predictor, requests, args)
    times = measure_modes(predictor, requests, device)
    print_stage_table(times[True], times[False], args.new_tokens, predictor.body.num_vertices)
    if args.batch_size:
        print(f"\n[tiny] batching on {device}, cached body embeddings")
        measure_batching(predictor, args.batch_size, BATCH_REPEATS, device)


# ---- the full-size architecture with random weights (--full) --------------------------------------------------
def materialise_random(model: torch.nn.Module, dtype: torch.dtype, device: torch.device, seed: int = 0) -> None:
    """Give every meta parameter random values made directly in ``dtype`` on ``device``, then move buffers.

    Norm scales (the only 1-D weights) become 1 and biases 0, the rest N(0, 0.02^2): with random norm
    scales the activations of 40 bf16 layers would shrink or blow up, and non-finite logits would
    stop the lift. Tied parameters stay tied. Timings do not depend on the values otherwise.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    made: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is None or not parameter.is_meta:
                continue
            if id(parameter) not in made:
                if name == "bias":
                    values = torch.zeros(parameter.shape, dtype=dtype, device=device)
                elif name == "weight" and parameter.dim() == 1:
                    values = torch.ones(parameter.shape, dtype=dtype, device=device)
                else:
                    values = torch.randn(parameter.shape, generator=generator, dtype=dtype, device=device)
                    values.mul_(INIT_STD)
                made[id(parameter)] = torch.nn.Parameter(values, requires_grad=False)
            module._parameters[name] = made[id(parameter)]
    model.to(device)  # the buffers (rotary frequencies, position ids) were built for real, on the host


def random_predictor(preset: str, device: torch.device, new_tokens: int) -> InteractVLMPredictor:
    from accelerate import init_empty_weights

    from engine.contact.config import get_config
    from engine.contact.model import InteractVLM
    from engine.contact.tokenizer import word_tokenizer
    from engine.contact.vlm import add_contact_tokens, clip_processor, token_id

    config = replace(get_config(preset, vocab_size=LLAMA_VOCAB), max_new_tokens=new_tokens)
    tokenizer = word_tokenizer()
    add_contact_tokens(tokenizer, config)
    if len(tokenizer) > LLAMA_VOCAB:  # every id the tokenizer makes must index the embedding table
        raise SystemExit(f"the word tokenizer has {len(tokenizer)} ids, more than the {LLAMA_VOCAB} embeddings")
    with init_empty_weights(include_buffers=False):  # no host memory for the 13B parameters
        model = InteractVLM(config)
    materialise_random(model, torch.bfloat16, device)
    model.eval()
    token_ids = {token: token_id(tokenizer, token) for token in config.seg_tokens}
    loaded = LoadedModel(model, tokenizer, f"random-{preset}", token_ids,
                         clip_processor(None, config.vision.image_size))
    predictor = InteractVLMPredictor(loaded, load_body("openbody").to(device))
    ForcedContactToken(predictor)
    return predictor


def full_skip_reason(args, device: torch.device) -> str | None:
    if device.type == "cuda" and not torch.cuda.is_available():
        return f"CUDA is not available here (torch {torch.__version__}); run with --full on a GPU machine"
    if device.type == "cpu" and not args.preset.startswith("tiny"):
        return (f"the {args.preset} preset on the CPU would need ~27 GB of bf16 weights and seconds per token; "
                "pass --device cuda, or --preset tiny-hcontact for a smoke test")
    return None


def print_model(predictor: InteractVLMPredictor, label: str, seconds: float) -> None:
    model = predictor.model
    sizes = {"LM": parameter_count(model.vlm.language_model), "CLIP": parameter_count(model.vlm.vision_tower),
             "SAM": parameter_count(model.sam)}
    print(f"\n{label}: {amount(parameter_count(model))} parameters ("
          + ", ".join(f"{name} {amount(count)}" for name, count in sizes.items())
          + f"), weights {gib(predictor.memory_bytes())}; built in {seconds / 1000:.1f} s; SAM "
          f"{predictor.config.sam} at {model.resolution} px, open body with {predictor.body.num_vertices:,} vertices")


def one_request_peak(predictor: InteractVLMPredictor, request, device: torch.device) -> int:
    """Peak GPU bytes allocated by one cached request alone (weights and cached embeddings included)."""
    torch.cuda.reset_peak_memory_stats(device)
    predictor.predict_human_contact(*request)
    return torch.cuda.max_memory_allocated(device)


def run_full(args, device: torch.device) -> None:
    label = f"[full] {args.preset}, random bf16 weights on {device}"
    reason = full_skip_reason(args, device)
    if reason:
        print(f"\n{label}: skipped: {reason}")
        return
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    seconds, predictor = timed(device, random_predictor, args.preset, device, args.new_tokens)
    print_model(predictor, label, seconds)
    first_ms, _ = timed(device, predictor.body_views)
    print(f"  first body_views (render at {predictor.model.resolution} px + SAM encode of 4 views, once per "
          f"predictor): {first_ms:.0f} ms")
    requests = make_requests(args.requests)
    print_request_setup(predictor, requests, args)
    if cuda:
        build_peak = torch.cuda.max_memory_allocated(device)
        request_peak = one_request_peak(predictor, requests[0], device)

    times = measure_modes(predictor, requests, device)
    print_stage_table(times[True], times[False], args.new_tokens, predictor.body.num_vertices)
    per_image = times[True].median("end to end") / 1000
    print(f"  per image, cached body embeddings: {per_image:.3f} s = {per_image / TARGET_S:.0%} of the "
          f"{TARGET_S:g} s target ({'within' if per_image <= TARGET_S else 'OVER'}; the target is for an H100)")
    if cuda:
        print(f"  peak GPU memory allocated: {gib(build_peak)} from the build through the first request, "
              f"{gib(request_peak)} in one cached request; reserved now {gib(torch.cuda.memory_reserved(device))} "
              f"({torch.cuda.get_device_name(device)})")
    if args.batch_size:
        print(f"\n[full] batching on {device}, cached body embeddings")
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        measure_batching(predictor, args.batch_size, BATCH_REPEATS, device)
        if cuda:
            print(f"  peak GPU memory allocated while batching: {gib(torch.cuda.max_memory_allocated(device))}")


# ---- main ------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=None,
                        help="timed requests per mode (default 20; 10 with --full, to stay within 4 minutes)")
    parser.add_argument("--new-tokens", type=int, default=24, help="answer length in tokens (default 24)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help=f"requests per predict_human_contact_batch (at most {MAX_BATCH}; 0 skips)")
    parser.add_argument("--full", action="store_true",
                        help="the released architecture with random bf16 weights instead of the tiny preset")
    parser.add_argument("--preset", default="hcontact", help="with --full: the config preset (default hcontact)")
    parser.add_argument("--device", default=None, help="default: cpu, or cuda with --full")
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if args.full else "cpu"))
    if args.requests is None:
        args.requests = 10 if args.full else 20

    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"CUDA {'available: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'not available'}; "
          f"1-minute load average {os.getloadavg()[0]:.2f}; STUDIO_VAR={os.environ['STUDIO_VAR']}")
    started = time.perf_counter()
    if args.full:
        run_full(args, device)
    else:
        run_tiny(args, device)
        print("\n[full] not requested: pass --full on a CUDA machine for the 13B + SAM ViT-H figures")
    print(f"\ntotal run {time.perf_counter() - started:.0f} s; 1-minute load average now {os.getloadavg()[0]:.2f} "
          "(load from other processes inflates the times)")


if __name__ == "__main__":
    main()
