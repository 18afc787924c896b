"""Benchmark: the study participant routes under load. Target: p95 per response <= 200 ms with 100 participants.

    python benchmarks/bench_studies.py [--participants 100] [--items 20] [--think 3.0] [--db URL]

The real server (``studio.server.BackgroundServer``, uvicorn) runs in a child process over a fresh store (file
SQLite in a temporary folder by default) holding one open study of ``--items`` seeded image pairs. This
process simulates ``--participants`` participants at once (asyncio + httpx, one connection each): each joins
with consent, fetches its first trial and both stimuli, then answers every trial (``POST .../respond``, whose
answer carries the next trial) and fetches the next stimuli. Between seeing a pair and answering, each waits a
think time drawn uniformly from [0.5, 1.5] x ``--think`` seconds (default 3 s: people take several seconds to
compare two 3D results; ``--think 0`` is a flood with no pause at all, which measures queueing rather than a
study). The server's CPU time per response (all its requests included) is printed too: unlike wall-clock
latency it does not depend on what else this machine is running. The time of each respond
request (client side, request sent to answer read) is the figure; join and stimulus fetches are printed too.
Afterwards the database is checked against what participants were told: every acknowledged response stored
once (lost: 0, duplicated: 0). Prints figures and the ratio to the target; asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
if str(REPO_ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "tests"))

TARGET_P95_MS = 200.0
SLUG = "bench"


def serve(folder: str, db_url: str, items: int, ready, stop, cpu) -> None:
    """The child: a studio server with one open study; puts its URL on ``ready`` and runs until ``stop``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from study_fixtures import open_study

    from app import build_studio
    from studio.server import BackgroundServer
    from studio.settings import StudioSettings

    models = Path(folder) / "models"
    models.mkdir(exist_ok=True)
    settings = StudioSettings(models_dir=models, db_url=db_url, data_dir=Path(folder) / "data")
    server = BackgroundServer(build_studio(settings))
    open_study(server.studio.store, SLUG, items=items)
    started = time.process_time()
    ready.put(server.url)
    stop.wait()
    cpu.put(time.process_time() - started)
    server.stop()


async def send(client, method: str, url: str, times: dict, **kwargs):
    """One request; a keep-alive connection the server closed just as it was reused (uvicorn closes idle ones
    after 5 s) is retried once: every study request may be repeated, responses are idempotent by trial key."""
    import httpx

    try:
        return await client.request(method, url, **kwargs)
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        times["retries"].append(1)
        return await client.request(method, url, **kwargs)


async def participant(client, index: int, times: dict, acknowledged: list, think: float) -> None:
    import random

    import httpx

    rng = random.Random(index)

    start = time.perf_counter()
    joined = await send(client, "POST", f"/study/{SLUG}/api/join", times,
                        json={"pid": f"bench-{index}", "session": "S", "consent": True})
    joined.raise_for_status()
    headers = {"X-Study-Token": joined.json()["token"]}
    payload = (await send(client, "GET", f"/study/{SLUG}/api/trial", times, headers=headers)).json()
    times["join"].append(time.perf_counter() - start)
    while "trial" in payload:
        trial = payload["trial"]
        start = time.perf_counter()
        for side in ("left", "right"):
            (await send(client, "GET", trial[side], times)).raise_for_status()
        times["stimuli"].append(time.perf_counter() - start)
        await asyncio.sleep(think * rng.uniform(0.5, 1.5))
        start = time.perf_counter()
        answer = await send(client, "POST", f"/study/{SLUG}/api/respond", times, headers=headers,
                            json={"trial": trial["key"], "choice": "left" if index % 2 else "right"})
        times["respond"].append(time.perf_counter() - start)
        if answer.status_code != 200:
            raise httpx.HTTPStatusError(answer.text, request=answer.request, response=answer)
        acknowledged.append(trial["key"])
        payload = answer.json()


async def load(url: str, participants: int, think: float) -> tuple[dict, list, float]:
    import httpx

    times = {"join": [], "stimuli": [], "respond": [], "retries": []}
    acknowledged: list[str] = []
    limits = httpx.Limits(max_connections=participants, max_keepalive_connections=participants)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(participant(client, index, times, acknowledged, think) for index in range(participants)))
        wall = time.perf_counter() - start
    return times, acknowledged, wall


def check_database(db_url: str, folder: str, acknowledged: list[str]) -> tuple[int, int]:
    """(lost, duplicated): acknowledged responses missing from the store, and trials answered twice."""
    from sqlalchemy import func, select

    from annotations import models
    from annotations.store import Store

    store = Store(db_url, data_dir=Path(folder) / "data")
    with store.session() as session:
        stored = set(session.scalars(select(models.StudyTrialRow.key).join(
            models.StudyResponseRow, models.StudyResponseRow.trial_id == models.StudyTrialRow.id)))
        rows, trials = session.execute(select(func.count(), func.count(models.StudyResponseRow.trial_id.distinct()))
                                       .select_from(models.StudyResponseRow)).one()
    store.close()
    return len(set(acknowledged) - stored), rows - trials


def percentile(values: list[float], share: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values) * 1000.0, share)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=100)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--think", type=float, default=3.0, help="mean seconds between seeing a pair and answering")
    parser.add_argument("--db", default=None, help="store URL (default: file SQLite in a temporary folder)")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="bench-studies-")
    db_url = args.db or f"sqlite:///{Path(folder) / 'store.db'}"
    context = multiprocessing.get_context("spawn")
    ready, stop, cpu = context.Queue(), context.Event(), context.Queue()
    server = context.Process(target=serve, args=(folder, db_url, args.items, ready, stop, cpu), daemon=True)
    server.start()
    url = ready.get(timeout=300)
    print(f"server {url}, store {db_url.split('://')[0]}, {args.participants} participants x {args.items} items, "
          f"think time {args.think:g} s (mean), load average {os.getloadavg()[0]:.2f}")
    times, acknowledged, wall = asyncio.run(load(url, args.participants, args.think))
    stop.set()
    cpu_ms = cpu.get(timeout=60) * 1000.0
    server.join(timeout=60)
    lost, duplicated = check_database(db_url, folder, acknowledged)
    p95 = percentile(times["respond"], 95)
    print(f"{len(times['respond'])} responses in {wall:.1f} s ({len(times['respond']) / wall:.0f}/s); "
          f"load average now {os.getloadavg()[0]:.2f}")
    print(f"{'figure':<40}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for name in ("respond", "stimuli", "join"):
        values = times[name]
        print(f"{name + (' (both sides)' if name == 'stimuli' else ''):<40}{percentile(values, 50):>10.1f}"
              f"{percentile(values, 95):>10.1f}{max(values) * 1000:>10.1f}")
    print(f"respond p95 {p95:.1f} ms vs target {TARGET_P95_MS:.0f} ms: ratio {p95 / TARGET_P95_MS:.2f} "
          f"({'met' if p95 <= TARGET_P95_MS else 'NOT met'})")
    print(f"server CPU during the load: {cpu_ms / 1000:.1f} s = {cpu_ms / len(times['respond']):.1f} ms per response "
          "(its share of the joins, trial and stimulus requests included)")
    print(f"lost {lost}, duplicated {duplicated} (acknowledged {len(acknowledged)}; requests retried after the "
          f"server closed an idle keep-alive connection: {len(times['retries'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
