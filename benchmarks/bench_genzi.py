"""Benchmark: GenZI lifting on the CPU (per hypothesis, and per prompt batched vs sequential), and (``--gpu``)
the full pipeline per prompt.

    python benchmarks/bench_genzi.py              # lifting, 4 x 400 = 1600 iterations, open body (target <= 60 s)
    python benchmarks/bench_genzi.py --gpu        # the whole pipeline on CUDA with SD2-sized random weights
    python benchmarks/bench_genzi.py --gpu --device cpu --tiny --phase-iterations 2   # smoke of the --gpu path

Lifting: the synthetic sofa case of the tests (16 selected views, 4 wrong, 2 px noise), one hypothesis,
GenZI's schedule; prints the time, its ratio to the 60 s target, and the recovery figures. Then one
prompt's lifting as the pipeline runs it: stage 0, 4 inpainting sets (each its own wrong views and 12-13
accepted views) with 4 orientation hypotheses each; stage 1, 2 kept bodies x 2 sets, warm-started, with
self-penetration. Timed sequential (``lifting.lift`` per set, the fitting core's loop) and batched
(``lifting.lift_many`` per stage, every set and hypothesis in one loop), wall and process CPU time, with
the load average; the per-prompt lifting time is compared with the 60 s per-prompt target.

``--gpu``: UNet, VAE and text encoder with SD2's sizes (UNet 320/640/1280/1280, 5/10/20/20 heads,
cross-attention 1024; VAE 128/256/512/512; OpenCLIP-H-sized text encoder, 23 layers of 1024) in fp16 with
random weights, a ViTPose whose heatmaps are constant (every keypoint found) and a ViT-B/32-sized CLIP with
random weights; 16 views, 4 + 2 inpaintings per view, 50 DPM-Solver++ steps, lifting at GenZI's 4 x 400
iterations per hypothesis, batched per stage (``--phase-iterations`` lowers it; the full schedule's time is
then extrapolated from the measured lifting calls and labelled so). Prints the time per prompt against the
60 s target (the release: about 3 min per lifting stage on an A100, plus inpainting), each stage's time and
the peak CUDA memory; before it, the per-prompt lifting above, sequential vs batched, on the device (at
``--compare-iterations`` per phase, 50 by default on the GPU, extrapolated to 400 and labelled so).
Random weights make the images noise; the figures are time and memory only. ``--device cpu --tiny`` runs
the same code with the tests' tiny seeded models (128 px, 2 inpainting steps, 4 views), to check the path
without a GPU; its figures mean nothing.

Expected effect on the GPU (not measured: no device in the sessions that made the changes): the last GPU
run took 185.7 s per prompt (views 1.9 s, inpainting 45.6 s, lifting 61.5 s for 8 hypotheses at 4 x 100
iterations, refinement 76.7 s), about 19 ms per lifting iteration, launch-bound. An iteration now runs one
fused skinning of the joints, keypoint sites and the 2654 scene vertices (forward kinematics by tree level,
no 4 x 4 per-vertex transforms), one SDF sample for both scene terms, no zero-weighted terms; and the
batched lifting runs a stage's 4 sets x 4 orientation hypotheses as the rows of one iteration with no
device sync inside it (the sequential loop ran 16 hypotheses' energies one by one in phase 1, 4 in the
others, and synced every iteration). The lifting kernel launches per prompt fall by about the number of sets
per stage (4); how far that brings the prompt toward the 60 s target, with the inpainting (45.6 s) the
largest part left, is for the next GPU run to measure. On the CPU the batch took 0.43 of the sequential
wall time per prompt (README, GenZI).
Needs diffusers on the GPU box (``pip install --no-deps diffusers==0.42.1`` and its small deps).
Nothing here asserts on timings.
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for path in (REPO_ROOT, REPO_ROOT / "tests" / "genzi"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

if "STUDIO_VAR" not in os.environ:
    os.environ["STUDIO_VAR"] = tempfile.mkdtemp(prefix="bench_genzi_")
    atexit.register(shutil.rmtree, os.environ["STUDIO_VAR"], ignore_errors=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402

TARGET_S = 60.0


def bench_lifting(phase_iterations: int) -> None:
    from engine.body import load_body
    from engine.genzi import lifting, scenes
    from engine.genzi.sdf import scene_sdf
    from engine.genzi.synthetic import sofa_case

    body = load_body("openbody")
    sdf = scene_sdf(scenes.builtin_scene("living_room"), dim=96)
    case = sofa_case(body, sdf)
    config = lifting.LiftConfig(phase_iterations=phase_iterations)  # as the pipeline: 4 orientations in phase 1
    lifting.lift(body, list(case.keypoints), case.cameras, sdf, case.selection.point.nearest,
                 config=lifting.LiftConfig(phase_iterations=2))  # warm-up: lazy imports and first-call costs
    phase_ends: dict[str, float] = {}
    progress = lambda fraction, name: phase_ends.__setitem__(name, time.perf_counter())
    load = os.getloadavg()
    start, cpu_start = time.perf_counter(), time.process_time()
    fit = lifting.lift(body, list(case.keypoints), case.cameras, sdf, case.selection.point.nearest, config=config,
                       progress=progress)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    error = np.linalg.norm(fit.joints - case.joints, axis=1)[list(lifting.GENZI_JOINT_IDS)].mean()
    lowest = sorted(np.argsort(fit.view_weights)[: len(case.wrong)].tolist())
    non_collision = float((sdf(torch.as_tensor(fit.vertices)) >= 0).float().mean())
    iterations = 4 * phase_iterations
    print(f"lifting, open body, {iterations} iterations, 16 views, torch threads while lifting {config.cpu_threads}, "
          f"scene terms on {len(lifting.scene_vertex_ids(body))} of {body.num_vertices} vertices; "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)")
    print(f"  time per hypothesis   {elapsed:8.1f} s   (target {TARGET_S:.0f} s, ratio {elapsed / TARGET_S:.2f}); "
          f"process CPU time {cpu:.1f} s")
    before = start
    for name, end in phase_ends.items():
        note = f" ({config.orientation_hypotheses} orientation hypotheses side by side)" if name.endswith("1") else ""
        print(f"  {name:22s}{end - before:8.1f} s   {1000 * (end - before) / phase_iterations:6.1f} ms/iteration{note}")
        before = end
    print(f"  MPJPE (17 joints)     {100 * error:8.2f} cm; lowest-scored views {lowest} (wrong: {list(case.wrong)}); "
          f"non-collision {non_collision:.3f} (the whole mesh)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prompt_sets(body, sdf, device: torch.device):
    """Stage 0's 4 inpainting sets and stage 1's 2 x 2, as ``(keypoints, cameras)``: each its own wrong views
    and accepted views (12-13 of 16), so the batch pads views as the pipeline's does. ``body`` and ``sdf`` on
    the CPU (the synthetic case is built there); the cameras go to ``device``."""
    from engine.genzi.synthetic import WRONG_VIEWS, sofa_case

    wrong_sets = (WRONG_VIEWS, (0, 5, 10, 14), (1, 6, 9, 13), (2, 4, 8, 12), (3, 6, 9, 12), (1, 5, 11, 15),
                  (0, 4, 10, 13), (2, 7, 8, 14))
    sets, truth = [], None
    for number, wrong in enumerate(wrong_sets):
        case = sofa_case(body, sdf, wrong=wrong)
        truth = case.joints if truth is None else truth
        kept = [view for view in range(16) if (view + number) % 5 != 0]
        cameras = type(case.cameras)(*(tensor[kept].to(device) for tensor in (case.cameras.K, case.cameras.R,
                                                                             case.cameras.t)))
        sets.append((tuple(case.keypoints[view] for view in kept), cameras))
    return sets[:4], sets[4:], truth, case.selection.point.nearest


def _timed(device: torch.device, fn):
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    _sync(device)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bench_prompt_lifting(device: torch.device, phase_iterations: int) -> None:
    """One prompt's lifting (8 bodies: 4 sets in stage 0, 2 x 2 in stage 1), sequential vs batched."""
    from engine.body import load_body
    from engine.fitting.fit import BodyInit
    from engine.genzi import lifting, scenes
    from engine.genzi.pipeline import _with_self_penetration
    from engine.genzi.sdf import scene_sdf

    sdf = scene_sdf(scenes.builtin_scene("living_room"), dim=96)
    first, second, truth, point = _prompt_sets(load_body("openbody"), sdf, device)
    body, sdf = load_body("openbody", device=device), sdf.to(device)
    stage0 = lifting.LiftConfig(phase_iterations=phase_iterations)
    stage1 = _with_self_penetration(stage0)
    warm = lambda fit: BodyInit(transl=fit.transl, global_orient=fit.global_orient, body_pose=fit.body_pose,
                                betas=fit.betas, latent=fit.latent)
    kept = lambda fits: [fits[0], fits[0], fits[1], fits[1]]  # the pipeline keeps the CLIP-ranked top half

    def sequential(config0=stage0, config1=stage1):
        fits = [lifting.lift(body, list(keys), cams, sdf, point, config=config0) for keys, cams in first]
        return fits + [lifting.lift(body, list(keys), cams, sdf, point, config=config1, init=warm(prior))
                       for (keys, cams), prior in zip(second, kept(fits))]

    def batched(config0=stage0, config1=stage1):
        fits = lifting.lift_many(body, [lifting.LiftJob(keys, cams) for keys, cams in first], sdf, point, config=config0)
        return fits + lifting.lift_many(body, [lifting.LiftJob(keys, cams, warm(prior))
                                               for (keys, cams), prior in zip(second, kept(fits))],
                                        sdf, point, config=config1)

    short = lifting.LiftConfig(phase_iterations=2)  # warm-up: lazy imports, first-call costs, CUDA kernels
    sequential(short, _with_self_penetration(short))
    batched(short, _with_self_penetration(short))
    iterations = 4 * phase_iterations
    load = os.getloadavg()
    print(f"one prompt's lifting on {device.type}: 8 bodies (stage 0: 4 sets x {stage0.orientation_hypotheses} "
          f"orientation hypotheses, 12-13 views each; stage 1: 2 x 2 sets, warm-started, self-penetration), "
          f"{iterations} iterations each, open body; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    fits = {}
    for name, run in (("sequential", sequential), ("batched", batched)):
        fits[name], wall, cpu = _timed(device, run)
        full = "" if phase_iterations == 400 else f" (x {400 / phase_iterations:g} for GenZI's 1600 iterations: " \
                                                   f"{wall * 400 / phase_iterations:.1f} s, extrapolated)"
        print(f"  {name:10s} {wall:8.1f} s wall, {cpu:8.1f} s process CPU time; target {TARGET_S:.0f} s per prompt, "
              f"ratio {wall / TARGET_S:.2f}{full}")
        fits[name + " wall"] = wall
    print(f"  batched / sequential wall time: {fits['batched wall'] / fits['sequential wall']:.2f}; "
          f"load average after {os.getloadavg()[0]:.1f}")
    error = lambda fit: 100 * np.linalg.norm(fit.joints - truth, axis=1)[list(lifting.GENZI_JOINT_IDS)].mean()
    print("  MPJPE per body (cm), sequential: " + " ".join(f"{error(f):.1f}" for f in fits["sequential"]))
    print("  MPJPE per body (cm), batched:    " + " ".join(f"{error(f):.1f}" for f in fits["batched"]))
    difference = max(float(np.abs(a.joints - b.joints).max()) for a, b in zip(fits["sequential"], fits["batched"]))
    print(f"  largest joint difference batched vs sequential {100 * difference:.4f} cm (float32: rounding can flip "
          f"the contact / penetration switch in long runs; equal to float32 resolution in float64, "
          f"tests/genzi/test_genzi_batch.py)")


def _sd2_sized_pipeline(tokenizer_folder: Path, device: torch.device):
    """SD2-sized random components built on the device (no multi-GB save and reload)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from tiny_models import write_tokenizer

    from engine.genzi.inpaint import configure_pipeline

    write_tokenizer(tokenizer_folder)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_folder)
    with torch.device(device):
        text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096,
                                            num_hidden_layers=23, num_attention_heads=16, max_position_embeddings=77,
                                            hidden_act="gelu", projection_dim=1024))
        unet = UNet2DConditionModel(sample_size=64, in_channels=9, out_channels=4, layers_per_block=2,
                                    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                                    cross_attention_dim=1024, use_linear_projection=True,
                                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            sample_size=512)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return configure_pipeline(pipe, device)


def _vitpose_and_clip(root: Path) -> None:
    import transformers
    from engine.fitting.vitpose import _processor_class
    from tiny_models import write_tokenizer

    backbone = transformers.VitPoseBackboneConfig(image_size=[256, 192], patch_size=[16, 16], hidden_size=768,
                                                  num_hidden_layers=12, num_attention_heads=12, out_indices=[12])
    model = transformers.VitPoseForPoseEstimation(transformers.VitPoseConfig(backbone_config=backbone, num_labels=17))
    with torch.no_grad():
        model.head.conv.weight.zero_()
        model.head.conv.bias.fill_(0.9)
    model.save_pretrained(root / "vitpose")
    _processor_class()(size={"height": 256, "width": 192}).save_pretrained(root / "vitpose")
    clip_dir = root / "clip-vit-base-patch32"
    write_tokenizer(clip_dir)
    config = transformers.CLIPConfig(text_config={"vocab_size": 49408}, vision_config={"patch_size": 32},
                                     projection_dim=512)
    transformers.CLIPModel(config).save_pretrained(clip_dir)
    (getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor)().save_pretrained(clip_dir)


def _tiny_components(root: Path, device: torch.device):
    """The tests' tiny seeded models (``--tiny``): the --gpu path checked in seconds, figures meaningless."""
    from tiny_models import write_template_vitpose, write_tiny_clip, write_tiny_sd2_inpainting

    from engine.genzi.inpaint import load_inpainting_pipeline

    write_tiny_sd2_inpainting(root / "sd2-inpainting")
    write_template_vitpose(root / "vitpose", num_labels=17)
    write_tiny_clip(root / "clip-vit-base-patch32")
    return load_inpainting_pipeline(root, device)


def bench_gpu(phase_iterations: int, device: torch.device, tiny: bool, compare_iterations: int) -> None:
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--gpu needs CUDA; none is available here (--device cpu --tiny checks the path on the CPU)")
        return
    bench_prompt_lifting(device, compare_iterations)  # first: a minute, so a pipeline over time cannot hide it
    try:
        import diffusers  # noqa: F401
    except ImportError:
        print("--gpu needs diffusers (pip install --no-deps diffusers==0.42.1 requests importlib-metadata)")
        return
    from engine.body import load_body
    from engine.fitting.vitpose import load_vitpose
    from engine.genzi import inpaint, lifting, scenes, views
    from engine.genzi.metrics import ClipScorer
    from engine.genzi.pipeline import GenziConfig, GenziPipeline

    cuda = device.type == "cuda"
    root = Path(tempfile.mkdtemp(prefix="genzi_models_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    start = time.perf_counter()
    if tiny:
        pipe = _tiny_components(root, device)
        config = GenziConfig(inpaint=inpaint.InpaintConfig(steps=2, image_size=128, batch_size=4),
                             views=views.ViewConfig(max_views=4), sdf_dim=16,
                             lift=lifting.LiftConfig(phase_iterations=phase_iterations))
    else:
        pipe = _sd2_sized_pipeline(root / "tokenizer", device)
        _vitpose_and_clip(root)
        config = GenziConfig(lift=lifting.LiftConfig(phase_iterations=phase_iterations))
    print(f"random {'tiny' if tiny else 'SD2-sized'} components built in {time.perf_counter() - start:.1f} s")
    pipeline = GenziPipeline(pipe, load_vitpose(root, device), ClipScorer.from_pretrained(models=root, device=device),
                             load_body("openbody", device=device), None, config)
    lifts: list[tuple[int, float]] = []  # (bodies, seconds) per batched lifting call
    original = lifting.lift_many

    def timed_lift_many(body, jobs, *args, **kwargs):  # time every stage's batch, to extrapolate to 400 per phase
        fits, wall, _ = _timed(device, lambda: original(body, jobs, *args, **kwargs))
        lifts.append((len(jobs), wall))
        return fits

    lifting.lift_many = timed_lift_many
    scene = scenes.builtin_scene("living_room")
    stages: list[tuple[str, float]] = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    try:
        output, elapsed, _ = _timed(device, lambda: pipeline(
            scene, "sitting on the sofa reading", scenes.BUILTIN_POINTS["living_room"],
            progress=lambda fraction, text: stages.append((text, time.perf_counter()))))
    finally:
        lifting.lift_many = original
    name = torch.cuda.get_device_name() if cuda else "the CPU (tiny models: path check only)"
    memory = f"; peak memory {torch.cuda.max_memory_allocated() / 1024 ** 3:.2f} GiB" if cuda else ""
    print(f"full pipeline per prompt on {name}: {elapsed:.1f} s (target {TARGET_S:.0f} s, ratio "
          f"{elapsed / TARGET_S:.2f}){memory}")
    for (name, at), (_, following) in zip(stages, stages[1:]):
        print(f"  {name:32s} {following - at:7.1f} s")
    print(f"  {len(output.renders)} views, {sum(len(r.images) for r in output.inpaintings)} inpaintings, "
          f"{len(output.bodies)} bodies, {len(output.failures)} failed sets")
    seconds, bodies = sum(wall for _, wall in lifts), sum(count for count, _ in lifts)
    calls = ", ".join(f"{count} bodies in {wall:.1f} s" for count, wall in lifts)
    if lifts and phase_iterations == lifting.PHASE_ITERATIONS:
        print(f"  lifting, batched per stage, GenZI's {4 * phase_iterations} iterations: {calls} ({seconds:.1f} s "
              f"for {bodies} bodies)")
    elif lifts:
        full = elapsed + seconds * (lifting.PHASE_ITERATIONS / phase_iterations - 1)
        print(f"  lifting, batched per stage, {4 * phase_iterations} iterations: {calls}; with GenZI's "
              f"{4 * lifting.PHASE_ITERATIONS} iterations the prompt would take about {full:.0f} s (extrapolated "
              f"linearly, ratio {full / TARGET_S:.2f} to the target)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="the full pipeline on CUDA with SD2-sized random weights")
    parser.add_argument("--device", default="cuda", help="--gpu's device (default cuda; cpu with --tiny checks the path)")
    parser.add_argument("--tiny", action="store_true", help="--gpu with the tests' tiny models (a path check)")
    parser.add_argument("--phase-iterations", type=int, default=400,
                        help="lifting iterations per phase (default: GenZI's 400); fewer with --gpu extrapolates the "
                             "prompt's time to GenZI's schedule from the measured lifting calls")
    parser.add_argument("--compare-iterations", type=int, default=None,
                        help="iterations per phase of the sequential vs batched prompt lifting (default: "
                             "--phase-iterations on the CPU, 50 with --gpu)")
    args = parser.parse_args()
    if args.phase_iterations < 1 or (args.compare_iterations is not None and args.compare_iterations < 1):
        parser.error("--phase-iterations and --compare-iterations must be at least 1")
    if args.gpu:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            parser.error(f"--device: {args.device!r} is not a torch device (cuda, cuda:1, cpu)")
        compare = args.compare_iterations or min(args.phase_iterations, 50)
        bench_gpu(args.phase_iterations, device, args.tiny, compare)
    else:
        bench_lifting(args.phase_iterations)
        bench_prompt_lifting(torch.device("cpu"), args.compare_iterations or args.phase_iterations)


if __name__ == "__main__":
    main()
