"""Benchmark: one HOI fit (stages 1-4: camera and body depth, translation, ICP, 250 Adam iterations) on the
chair example at its own size (512 x 512, the render size of the release, which renders at its input's
size), time per stage; and the silhouette-only baseline.

    python benchmarks/bench_hoi.py [--iterations 250] [--render-size 512] [--threads N]
    python benchmarks/bench_hoi.py --gpu          # the same on CUDA (target <= 5 s per image)

Targets: <= 60 s per image on CPU (PHOSA, the older method: 3-5 minutes per image), <= 5 s on a GPU.
Stages: camera (and the body's depth), translation, ICP, starts (the multi-start's probe steps from each
start pose), adam (the chosen start's remaining steps). Adam steps per image: 250 plus the probes of the
other starts (FitConfig.start_angles, probe_iterations). ``--iterations`` fewer than 250 measures fewer
steps and prints the 250-step figure extrapolated from the per-step time (marked as such). Wall and process
CPU seconds are printed with the load average (other processes slow the wall figure on a shared machine).
Prints figures only; nothing here asserts on timings. Run it under ``flock /work/wt/bench.lock``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from engine.body import load_body  # noqa: E402
from engine.hoi.fit import FitConfig, fit_object  # noqa: E402
from engine.hoi.inputs import load_body_file, load_contacts_file, load_mask_file  # noqa: E402
from engine.objects import builtin_object  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "studio" / "examples" / "hoi" / "person_chair"
PHOSA_SECONDS = (180.0, 300.0)
TARGET_CPU, TARGET_GPU = 60.0, 5.0


def adam_steps(config: FitConfig, iterations: int) -> int:
    """Adam steps of one fit: the chosen start's ``iterations`` plus the other starts' probes."""
    return iterations + (len(config.start_angles) - 1) * min(config.probe_iterations, iterations)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=250)
    parser.add_argument("--render-size", type=int, default=None, help="default: the image's size (512)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--gpu", action="store_true", help="run on CUDA")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda") if args.gpu else torch.device("cpu")
    if args.gpu and not torch.cuda.is_available():
        print("--gpu needs CUDA; none is available here")
        return 2
    body_model = load_body("openbody")
    body = load_body_file(EXAMPLE / "body.npz", "body.npz", lambda kind: body_model)
    mask = load_mask_file(EXAMPLE / "mask.png", (512, 512))
    contacts = load_contacts_file(EXAMPLE / "contacts.npz", human_topology=body.topology)
    obj = builtin_object("chair")
    config = FitConfig(iterations=args.iterations, render_size=args.render_size, frames=2)
    print(f"load average {os.getloadavg()}, device {device}, threads {torch.get_num_threads()}, object chair ({len(obj.faces)} faces), body "
          f"{len(body.vertices)} vertices, image 512 x 512, render {args.render_size or 512}, {args.iterations} iterations")
    # warm-up: the first Adam step imports parts of torch (seconds, once per process, as in the studio)
    fit_object(body, obj, mask, contacts, FitConfig(iterations=5, frames=1), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for name, use in (("contacts", contacts), ("baseline (silhouette only)", None)):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = fit_object(body, obj, mask, use, config, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        stages = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result.stage_seconds.items())
        steps = adam_steps(config, args.iterations)
        descent = result.stage_seconds["starts"] + result.stage_seconds["adam"]
        per_step = descent / max(steps, 1)
        full_steps = adam_steps(config, 250)
        full = total - descent + per_step * full_steps
        target = TARGET_GPU if device.type == "cuda" else TARGET_CPU
        note = "" if args.iterations == 250 else f" (extrapolated from {steps} steps)"
        print(f"{name}: wall {total:.1f} s, process CPU {cpu:.1f} s [{stages}], {steps} Adam steps "
              f"({len(config.start_angles)} starts), {1000 * per_step:.0f} ms per step, IoU {result.iou:.3f}, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"  per image with 250 steps (+ probes: {full_steps} steps): {full:.1f} s{note}; target {target:.0f} s "
              f"(ratio {full / target:.2f}); PHOSA 3-5 min: {PHOSA_SECONDS[0] / full:.1f}-{PHOSA_SECONDS[1] / full:.1f}x faster")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
