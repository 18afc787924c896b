"""Benchmark: fitting the open body to 2D keypoints (engine/fitting), single-view and four-view.

    python benchmarks/bench_fitting.py [--gpu] [--repeats 1]

Ground truth: the open body in ``synthetic.WALK_AND_REACH`` seen by cameras at 3.5 m, 512 x 512 pixels,
2 px keypoint noise (the acceptance tests' setting). Prints, per case, the wall time of ``fit_body``
with the default schedule (300 iterations, 4 orientation hypotheses up to stage 2), the time per
iteration, and the accuracy (PA-MPJPE / MPJPE in cm, 2D error in px).

Then the per-iteration cost of a GenZI-sized lifting step (16 views, every vertex posed each step, as
scene terms need), extrapolated to GenZI's 1,600 iterations per stage and compared with the paper's
"about 3 minutes on an A100 per stage" (REFERENCE.md section 2). Nothing here asserts.
"""
from __future__ import annotations

import argparse
import atexit
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("STUDIO_VAR", tempfile.mkdtemp(prefix="bench_fitting_"))
if os.environ["STUDIO_VAR"].startswith(tempfile.gettempdir()):
    atexit.register(shutil.rmtree, os.environ["STUDIO_VAR"], ignore_errors=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.body import load_body  # noqa: E402
from engine.fitting import energies  # noqa: E402
from engine.fitting.fit import DEFAULT_STAGES, BodyInit, ExtraTerm, FitConfig, fit_body  # noqa: E402
from engine.fitting.synthetic import WALK_AND_REACH, body_pose_from, orbit_cameras, synthetic_views  # noqa: E402

ORIENT, TRANSL = (0.1, 0.5, 0.05), (0.2, 0.1, 0.3)
GENZI_SECONDS_PER_STAGE = 180.0  # GenZI paper: about 3 minutes per stage on an A100
GENZI_ITERATIONS = 1600


def _synchronise(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _case(body, azimuths, device, repeats):
    cameras = orbit_cameras(azimuths)
    scene = synthetic_views(body.to("cpu"), cameras, body_pose_from(WALK_AND_REACH), ORIENT, TRANSL, seed=1)
    body.to(device)
    times = []
    for _ in range(repeats):
        _synchronise(device)
        start = time.perf_counter()
        fit = fit_body(body, scene.keypoints, cameras)
        _synchronise(device)
        times.append(time.perf_counter() - start)
    iterations = sum(stage.iterations for stage in FitConfig().stages)
    truth, joints = torch.as_tensor(scene.joints), torch.as_tensor(fit.joints)
    print(f"{len(azimuths)} view(s): {min(times):6.2f} s per fit ({iterations} iterations, "
          f"{1000 * min(times) / iterations:5.1f} ms each) | PA-MPJPE {100 * float(energies.pa_mpjpe(joints, truth)):.2f} cm, "
          f"MPJPE {100 * float(energies.mpjpe(joints, truth)):.2f} cm, 2D error {fit.reprojection_error_px.mean():.2f} px")


def _genzi_sized(body, device, iterations=20):
    azimuths = list(np.linspace(0, 360, 16, endpoint=False))
    cameras = orbit_cameras(azimuths)
    scene = synthetic_views(body.to("cpu"), cameras, body_pose_from(WALK_AND_REACH), ORIENT, TRANSL, seed=1)
    body.to(device)
    floor = ExtraTerm(lambda state: torch.relu(-1.2 - state.vertices[:, 1]).mean(), (1.0,))
    stage = dataclasses.replace(DEFAULT_STAGES[2], iterations=iterations)
    config = FitConfig(stages=(stage,), learn_view_weights=True)
    init = BodyInit(global_orient=np.asarray(ORIENT), transl=np.asarray(TRANSL))
    fit_body(body, scene.keypoints, cameras, config=dataclasses.replace(config, stages=(dataclasses.replace(stage, iterations=2),)),
             init=init, extra_terms={"floor": floor})  # warm-up
    _synchronise(device)
    start = time.perf_counter()
    fit_body(body, scene.keypoints, cameras, config=config, init=init, extra_terms={"floor": floor})
    _synchronise(device)
    per_iteration = (time.perf_counter() - start) / iterations
    projected = per_iteration * GENZI_ITERATIONS
    print(f"GenZI-sized step (16 views, all {body.num_vertices} vertices posed): {1000 * per_iteration:.1f} ms/iteration; "
          f"{GENZI_ITERATIONS} iterations ~ {projected:.1f} s vs GenZI's ~{GENZI_SECONDS_PER_STAGE:.0f} s per stage on an A100 "
          f"(ratio {GENZI_SECONDS_PER_STAGE / projected:.1f}x; their scene SDF and self-penetration terms not included)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="run on CUDA (the engine's same code path)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.gpu else "cpu")
    if args.gpu and not torch.cuda.is_available():
        print("--gpu given but CUDA is not available")
        return 1
    body = load_body("openbody")
    print(f"device {device}, torch threads {torch.get_num_threads()}, open body {body.num_vertices} vertices, "
          f"load average {os.getloadavg()[0]:.1f}")
    warm = synthetic_views(body, orbit_cameras([90.0]), body_pose_from(WALK_AND_REACH), ORIENT, TRANSL)
    fit_body(body.to(device), warm.keypoints, orbit_cameras([90.0]),
             config=FitConfig(stages=(dataclasses.replace(DEFAULT_STAGES[0], iterations=2),)))  # warm-up
    _case(body, [90.0], device, args.repeats)
    _case(body, [20.0, 110.0, 200.0, 290.0], device, args.repeats)
    _genzi_sized(body, device)
    if device.type == "cuda":
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2 ** 20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
