"""Benchmark: the cost of the hop to Ray Serve. The tiny contact model in-process (the local engine) against the
same model deployed on Ray Serve, with ``@serve.batch`` off (``max_batch_size = 1``) and on (8).

    flock /work/wt/bench.lock python benchmarks/bench_engine_hop.py --address 127.0.0.1:6390 [--requests 48]
        [--clients 8] [--replicas 1]

Each setting answers ``--requests`` single (image, label) contact requests sent by ``--clients`` threads at once
(what several studio sessions do), after 4 warm-ups, through ``engine.use(name).predict_human_contact_batch``
exactly as the demo calls it. Printed per setting: requests per second, p50 and p95 latency, and the ratio to
the local engine (the baseline). The Ray deployments are made with ``app.py engine``'s own ``deploy`` under the
application prefix ``bench-hop`` and deleted at the end. Needs a running cluster (``.ci/start-ray``); without one
only the local figures are printed, with the reason.

Prints figures only; nothing here asserts on timings. Load average printed alongside (a shared machine).
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("STUDIO_VAR", tempfile.mkdtemp(prefix="bench_engine_hop_"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

MODEL = "interactvlm-hcontact"
LABELS = ("chair", "cup", "bicycle", None)


def tiny_models(root: Path) -> Path:
    from engine.contact.checkpoint import CLIP_FOLDER, new_model, save_released

    model, tokenizer = new_model("tiny-hcontact", seed=0)
    save_released(model, tokenizer, root / "interactvlm" / "hcontact", dtype="fp32", clip_folder=root / CLIP_FOLDER)
    return root


def picture() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def run(engine, requests: int, clients: int, image: bytes) -> dict:
    def one(index: int) -> float:
        start = time.perf_counter()
        with engine.use(MODEL) as model:
            model.predict_human_contact_batch([(image, LABELS[index % len(LABELS)])])
        return time.perf_counter() - start

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(4)))  # warm-up: loads, caches, connections
        start = time.perf_counter()
        latencies = sorted(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    return {"rps": requests / wall, "p50": statistics.median(latencies),
            "p95": latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))]}


def line(name: str, figures: dict, baseline: dict | None) -> str:
    text = f"{name:<34} {figures['rps']:7.2f} req/s   p50 {figures['p50'] * 1000:7.1f} ms   p95 {figures['p95'] * 1000:7.1f} ms"
    if baseline is not None:
        text += (f"   throughput x{figures['rps'] / baseline['rps']:.2f} of local, "
                 f"p95 x{figures['p95'] / baseline['p95']:.2f}")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default=os.environ.get("STUDIO_TEST_RAY_ADDRESS"),
                        help="Ray cluster HOST:PORT (default $STUDIO_TEST_RAY_ADDRESS)")
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()

    import app

    models = tiny_models(Path(tempfile.mkdtemp(prefix="bench_hop_models_")))
    image = picture()
    print(f"tiny contact model, {args.requests} requests from {args.clients} clients, "
          f"load average {os.getloadavg()[0]:.2f}")
    local = app.build_engine(str(models), "cpu")
    baseline = run(local, args.requests, args.clients, image)
    print(line("local engine (baseline)", baseline, None))
    if not args.address:
        print("Ray Serve: skipped (no --address and no $STUDIO_TEST_RAY_ADDRESS; start one with .ci/start-ray)")
        return 0

    from engine.errors import InputError
    from engine.serving import RayEngine, ServeConfig, deploy, undeploy

    for batch in (1, 8):
        config = ServeConfig.from_dict({"address": args.address, "app": "bench-hop", "device": "cpu", "models": {
            MODEL: {"num_cpus": 0.5, "replicas": args.replicas, "max_ongoing_requests": 16,
                    "max_batch_size": batch, "batch_wait_timeout_s": 0.02}}})
        try:
            deploy(config, local.names(), models_dir=str(models))
        except InputError as error:
            print(f"Ray Serve: skipped ({error})")
            return 0
        try:
            figures = run(RayEngine(config, local), args.requests, args.clients, image)
        finally:
            undeploy(config)
        name = f"Ray Serve, {args.replicas} replica(s), " + (f"batch <= {batch}" if batch > 1 else "no batching")
        print(line(name, figures, baseline))
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
