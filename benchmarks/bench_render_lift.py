"""Benchmark: render the 4 body views at 1024^2 and lift four 1024^2 masks (issue targets on this CPU:
render <= 2 s for all 4 views, cold and uncached; lift <= 0.15 s), against trimesh ray casting as the
baseline for the same pixel -> face maps.

    python benchmarks/bench_render_lift.py [--rays-per-view N] [--seed S]

Prints figures only; nothing here asserts on timings.

The trimesh baseline casts one ray per pixel centre from the camera centre with
``trimesh.ray.ray_triangle.RayMeshIntersector.intersects_first`` (pure numpy; embree is not used).
Casting all 4 x 1024^2 rays would take hours, so a seeded uniform random subset of pixels is cast per
view and the time is extrapolated linearly to the full images. Its broad phase is ``rtree`` (pinned in
requirements.txt for this baseline).
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

if "STUDIO_VAR" not in os.environ:  # keep caches out of var/ and start without any
    os.environ["STUDIO_VAR"] = tempfile.mkdtemp(prefix="bench_render_lift_")
    atexit.register(shutil.rmtree, os.environ["STUDIO_VAR"], ignore_errors=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import rll  # noqa: E402
from engine.body import load_body  # noqa: E402
from engine.render.rasterizer import rasterize_meshes  # noqa: E402

RESOLUTION = 1024
RENDER_TARGET_S = 2.0
LIFT_TARGET_S = 0.15
LIFT_REPEATS = 10
RASTER_REPEATS = 3


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def verdict(seconds: float, target: float) -> str:
    return f"{'within' if seconds <= target else 'OVER'} the {target:g} s target ({seconds / target:.0%} of it)"


def body_mesh() -> tuple[torch.Tensor, torch.Tensor, str]:
    body = load_body("openbody")
    return body.vitruvian_vertices(), body.faces, body.topology


def rasterize_body_views(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(4, H, W) pixel -> face maps of the body preset, as render_views computes them."""
    cameras = rll.PRESETS["body"].cameras(dtype=vertices.dtype)
    size = (RESOLUTION, RESOLUTION)
    return rasterize_meshes(cameras.transform_points_screen(vertices, size), faces, size).pix_to_face


def cold_full_render_in_fresh_process() -> float | None:
    """render_views(cache=False) timed as the first render of a fresh interpreter (body already cached)."""
    completed = subprocess.run([sys.executable, __file__, "--child-cold-render"], capture_output=True, text=True,
                               env=os.environ.copy(), cwd=REPO_ROOT)
    for line in completed.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)["seconds"]
    print(completed.stderr[-2000:], file=sys.stderr)
    return None


def child_cold_render() -> None:
    vertices, faces, topology = body_mesh()
    seconds, _ = timed(rll.render_views, vertices, faces, preset="body", resolution=RESOLUTION,
                       topology=topology, cache=False)
    print(json.dumps({"seconds": seconds}))


def trimesh_intersector(vertices: torch.Tensor, faces: torch.Tensor):
    import trimesh
    from trimesh.ray.ray_triangle import RayMeshIntersector

    mesh = trimesh.Trimesh(vertices.double().numpy(), faces.numpy(), process=False)
    import rtree

    broad_phase = f"rtree {rtree.__version__}"
    # Build the broad-phase index outside the timed section (a one-off per mesh, like our per-call setup).
    mesh.triangles_tree
    return RayMeshIntersector(mesh), f"trimesh {trimesh.__version__}, broad phase: {broad_phase}"


def pixel_rays(camera_index: int, pixels: np.ndarray, height: int, width: int):
    """World-space rays from the camera centre through the centres of flat pixel indices (cameras.py conventions)."""
    cameras = rll.PRESETS["body"].cameras(dtype=torch.float64)
    rotation = cameras.R[camera_index].numpy()
    centre = cameras.camera_centres()[camera_index].numpy()
    focal, half = cameras.focal_ndc, min(height, width) / 2
    rows, cols = pixels // width, pixels % width
    ndc_x, ndc_y = (width / 2 - 0.5 - cols) / half, (height / 2 - 0.5 - rows) / half
    view_dirs = np.stack([ndc_x / focal, ndc_y / focal, np.ones(len(pixels))], axis=-1)
    world_dirs = view_dirs @ rotation.T  # view = world @ R + T (row vectors), R orthonormal
    return np.broadcast_to(centre, world_dirs.shape).copy(), world_dirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rays-per-view", type=int, default=10000,
                        help="pixels cast through trimesh per view (uniform random, seeded); default 10000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child-cold-render", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_cold_render:
        child_cold_render()
        return

    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads "
          f"(default), load average {os.getloadavg()[0]:.2f}, STUDIO_VAR={os.environ['STUDIO_VAR']}")
    seconds, (vertices, faces, topology) = timed(body_mesh)
    print(f"mesh: open body ({topology}) in the Vitruvian pose, as-is: {vertices.shape[0]:,} vertices, "
          f"{faces.shape[0]:,} faces (generated in {seconds:.1f} s, untimed)")
    height = width = RESOLUTION

    # --- (a) rasterization only: the pixel -> face maps -------------------------------------------------
    raster_cold, pix_to_face = timed(rasterize_body_views, vertices, faces)
    raster_runs = [timed(rasterize_body_views, vertices, faces)[0] for _ in range(RASTER_REPEATS)]
    raster_warm = statistics.median(raster_runs)
    coverage = (pix_to_face >= 0).float().mean((1, 2)).tolist()
    print(f"\n[render] rasterize 4 views at {width}x{height} (pixel -> face maps only)")
    print(f"  cold (first call in the process): {raster_cold:.3f} s, {verdict(raster_cold, RENDER_TARGET_S)}")
    print(f"  warm (median of {RASTER_REPEATS}):              {raster_warm:.3f} s (min {min(raster_runs):.3f}), {verdict(raster_warm, RENDER_TARGET_S)}")
    print("  coverage per view: " + ", ".join(f"{c:.1%}" for c in coverage))

    # --- (b) the full render_views(cache=False): raster + shading + vertex maps -----------------------
    render = lambda: rll.render_views(vertices, faces, preset="body", resolution=RESOLUTION, topology=topology,
                                      cache=False)
    full_first, views = timed(render)
    full_runs = [timed(render)[0] for _ in range(RASTER_REPEATS)]
    full_warm = statistics.median(full_runs)
    full_fresh = cold_full_render_in_fresh_process()
    print("\n[render] rll.render_views(..., cache=False): raster + Phong shading + pixel -> vertex maps")
    if full_fresh is not None:
        print(f"  cold (fresh process):             {full_fresh:.3f} s, {verdict(full_fresh, RENDER_TARGET_S)}")
    print(f"  first call in this process:       {full_first:.3f} s, {verdict(full_first, RENDER_TARGET_S)}")
    print(f"  warm (median of {RASTER_REPEATS}):              {full_warm:.3f} s (min {min(full_runs):.3f}), {verdict(full_warm, RENDER_TARGET_S)}")
    full_reported = full_fresh if full_fresh is not None else full_first

    # --- lift four 1024^2 masks -------------------------------------------------------------------------
    generator = torch.Generator().manual_seed(args.seed)
    masks = torch.rand(views.valid.shape, generator=generator)  # (4, 1024, 1024) float32 in [0, 1)
    lift_cold, scores = timed(rll.lift, views, masks)  # includes building views.plan
    lift_runs = [timed(rll.lift, views, masks)[0] for _ in range(LIFT_REPEATS)]
    lift_warm = statistics.median(lift_runs)
    print(f"\n[lift] rll.lift of four {width}x{height} random masks -> {scores.shape[0]:,} vertex scores")
    print(f"  first (cold, builds views.plan):  {lift_cold:.3f} s, {verdict(lift_cold, LIFT_TARGET_S)}")
    print(f"  steady state (median of {LIFT_REPEATS}):    {lift_warm:.4f} s (min {min(lift_runs):.4f}), {verdict(lift_warm, LIFT_TARGET_S)}")

    # --- baseline: trimesh ray casting for the same pixel -> face maps -----------------------------------
    intersector, description = trimesh_intersector(vertices, faces)
    rng = np.random.default_rng(args.seed)
    n_rays = min(args.rays_per_view, height * width)
    ours_flat = pix_to_face.reshape(pix_to_face.shape[0], -1).numpy()
    cast_seconds, agree, total, agree_fg, total_fg = [], 0, 0, 0, 0
    faces_np = faces.numpy()
    mismatch_kinds = {"adjacent faces (shared vertex: edge ties)": 0, "silhouette (one side background)": 0,
                      "non-adjacent faces": 0}
    for view in range(pix_to_face.shape[0]):
        pixels = rng.choice(height * width, size=n_rays, replace=False)
        origins, directions = pixel_rays(view, pixels, height, width)
        seconds, hits = timed(intersector.intersects_first, origins, directions)
        cast_seconds.append(seconds)
        ours = ours_flat[view, pixels]
        foreground = (ours >= 0) | (hits >= 0)
        agree, total = agree + int((hits == ours).sum()), total + n_rays
        agree_fg, total_fg = agree_fg + int((hits == ours)[foreground].sum()), total_fg + int(foreground.sum())
        for theirs, mine in zip(hits[hits != ours], ours[hits != ours]):
            if theirs < 0 or mine < 0:
                mismatch_kinds["silhouette (one side background)"] += 1
            elif np.intersect1d(faces_np[theirs], faces_np[mine]).size:
                mismatch_kinds["adjacent faces (shared vertex: edge ties)"] += 1
            else:
                mismatch_kinds["non-adjacent faces"] += 1
    per_view_full = [s / n_rays * height * width for s in cast_seconds]
    trimesh_full = sum(per_view_full)
    agreement = agree / total
    print(f"\n[baseline] {description}")
    print(f"  cast {n_rays:,} random pixel-centre rays per view ({total:,} in all) in {sum(cast_seconds):.1f} s; "
          f"EXTRAPOLATED linearly from those {total:,} rays to 4 x {height * width:,} rays:")
    print("  per view: " + ", ".join(f"{s:.0f} s" for s in per_view_full) + f"; all 4 views: {trimesh_full:,.0f} s "
          f"(~{trimesh_full / 60:.0f} min)")
    print(f"  agreement with our pix_to_face on the sampled pixels: {agreement:.3%} ({agree:,}/{total:,}, "
          f"background = -1 included); on pixels either method covers: "
          f"{agree_fg / max(total_fg, 1):.3%} ({agree_fg:,}/{total_fg:,})")
    if total - agree:
        print("  disagreements: " + ", ".join(f"{count} {kind}" for kind, count in mismatch_kinds.items()))
    print(f"  speed ratio trimesh (extrapolated) / ours: {trimesh_full / raster_warm:,.0f}x vs raster warm, "
          f"{trimesh_full / raster_cold:,.0f}x vs raster cold, {trimesh_full / full_reported:,.0f}x vs the full "
          f"cold render_views")

    # --- summary ----------------------------------------------------------------------------------------
    rows = [
        ("faces", f"{faces.shape[0]:,}"),
        ("render raster-only s (cold / warm)", f"{raster_cold:.3f} / {raster_warm:.3f}"),
        ("render full s (cold" + (", fresh process)" if full_fresh is not None else ")") + " / warm",
         f"{full_reported:.3f} / {full_warm:.3f}"),
        ("render target s", f"{RENDER_TARGET_S:g}"),
        ("lift s (cold incl. plan / steady)", f"{lift_cold:.3f} / {lift_warm:.4f}"),
        ("lift target s", f"{LIFT_TARGET_S:g}"),
        (f"trimesh s (extrapolated from {total:,} rays)", f"{trimesh_full:,.0f}"),
        ("ratio trimesh / raster warm", f"{trimesh_full / raster_warm:,.0f}x"),
        ("agreement % (all sampled / covered)", f"{agreement:.3%} / {agree_fg / max(total_fg, 1):.3%}"),
    ]
    width_label = max(len(label) for label, _ in rows)
    print(f"\nsummary (1-minute load average now {os.getloadavg()[0]:.2f}; load from other processes on the "
          f"{os.cpu_count()} cores inflates the times)")
    for label, value in rows:
        print(f"  {label:<{width_label}}  {value}")


if __name__ == "__main__":
    main()
