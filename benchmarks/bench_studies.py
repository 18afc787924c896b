"""Benchmark: the study participant routes under load. Target: p95 per response <= 200 ms with 100 participants.

    python benchmarks/bench_studies.py [--participants 100] [--items 20] [--think 3.0] [--pg URL] [--only NAME]

Runs once on SQLite (a file in a temporary folder) and once on PostgreSQL when ``--pg`` or
``$STUDIO_TEST_PG_URL`` names a server (``eval "$(.ci/start-postgres)"`` starts one). For each, the real server
(``studio.server.BackgroundServer``, uvicorn) runs in a child process over that store, holding one new open
study (a fresh name each run) of ``--items`` seeded image pairs. This
process simulates ``--participants`` participants at once (asyncio, one keep-alive connection each, a minimal HTTP/1.1
client: ``benchmarks/keepalive.py``): each joins
with consent, fetches its first trial and both stimuli, then answers every trial (``POST .../respond``, whose
answer carries the next trial) and fetches the next stimuli. Between seeing a pair and answering, each waits a
think time drawn uniformly from [0.5, 1.5] x ``--think`` seconds (default 3 s: people take several seconds to
compare two 3D results; ``--think 0`` is a flood with no pause at all, which measures queueing rather than a
study). The server's CPU time per response (all its requests included) is printed too: unlike wall-clock
latency it does not depend on what else this machine is running. The time of each respond
request (client side, request sent to answer read) is the figure; join and stimulus fetches are printed too.
Afterwards the database is checked against what participants were told: every acknowledged response stored
once (lost: 0, duplicated: 0), and one response per trial and per item and participant. The generator's own CPU
time (this process: 100 simulated browsers cost CPU too, on the same cores as the server) and the load average
are printed next to the figures. Prints figures and the ratio to the target; asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
if str(REPO_ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "tests"))

from benchmarks.keepalive import KeepAliveClient  # noqa: E402

TARGET_P95_MS = 200.0


def serve(folder: str, db_url: str, slug: str, items: int, ready, stop, cpu) -> None:
    """The child: a studio server with one open study; puts its URL on ``ready`` and runs until ``stop``, then
    puts its CPU time and the respond handler's own durations (in its worker thread) on ``cpu``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from study_fixtures import open_study

    import studio.study
    from app import build_studio
    from studio.server import BackgroundServer
    from studio.settings import StudioSettings

    handler, durations = studio.study.respond_payload, []

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return handler(*args, **kwargs)
        finally:
            durations.append(time.perf_counter() - start)

    studio.study.respond_payload = timed  # looked up at each request: the route's thread calls this wrapper
    models = Path(folder) / "models"
    models.mkdir(exist_ok=True)
    settings = StudioSettings(models_dir=models, db_url=db_url, data_dir=Path(folder) / "data")
    server = BackgroundServer(build_studio(settings))
    open_study(server.studio.store, slug, items=items)
    started = time.process_time()
    ready.put(server.url)
    stop.wait()
    cpu.put((time.process_time() - started, durations))
    server.stop()


def _json(status: int, payload: bytes, what: str) -> dict:
    if status != 200:
        raise RuntimeError(f"{what}: HTTP {status}: {payload[:200]!r}")
    return json.loads(payload)


async def participant(address: tuple[str, int], slug: str, index: int, times: dict, acknowledged: list,
                      think: float) -> None:
    rng = random.Random(index)
    browser = KeepAliveClient(*address)
    start = time.perf_counter()
    joined = _json(*await browser.request("POST", f"/study/{slug}/api/join",
                                          {"pid": f"bench-{index}", "session": "S", "consent": True}), "join")
    headers = {"X-Study-Token": joined["token"]}
    payload = _json(*await browser.request("GET", f"/study/{slug}/api/trial", headers=headers), "trial")
    times["join"].append(time.perf_counter() - start)
    while "trial" in payload:
        trial = payload["trial"]
        start = time.perf_counter()
        for side in ("left", "right"):
            status, body = await browser.request("GET", trial[side])
            if status != 200 or not body:
                raise RuntimeError(f"stimulus {side}: HTTP {status}")
        times["stimuli"].append(time.perf_counter() - start)
        await asyncio.sleep(think * rng.uniform(0.5, 1.5))
        start = time.perf_counter()
        answer = await browser.request("POST", f"/study/{slug}/api/respond", headers=headers,
                                       body={"trial": trial["key"], "choice": "left" if index % 2 else "right"})
        times["respond"].append(time.perf_counter() - start)
        times["respond_at"].append(start)
        payload = _json(*answer, "respond")
        acknowledged.append(trial["key"])
    times["retries"].append(browser.retries)
    browser.close()


async def load(url: str, slug: str, participants: int, think: float) -> tuple[dict, list, float]:
    times = {"join": [], "stimuli": [], "respond": [], "respond_at": [], "retries": []}
    acknowledged: list[str] = []
    parsed = urlparse(url)
    start = time.perf_counter()
    await asyncio.gather(*(participant((parsed.hostname, parsed.port), slug, index, times, acknowledged, think)
                           for index in range(participants)))
    times["respond_at"] = [moment - start for moment in times["respond_at"]]
    return times, acknowledged, time.perf_counter() - start


def check_database(db_url: str, folder: str, slug: str, acknowledged: list[str]) -> dict:
    """Counts in the store: responses, acknowledged ones missing (lost), trials answered more than once and
    (participant, item) pairs answered more than once (duplicated), participants finished."""
    from sqlalchemy import func, select

    from annotations import models
    from annotations.store import Store

    response, trial, person = models.StudyResponseRow, models.StudyTrialRow, models.StudyParticipantRow
    store = Store(db_url, data_dir=Path(folder) / "data")
    with store.session() as session:
        study_id = session.scalar(select(models.StudyRow.id).where(models.StudyRow.slug == slug))
        rows = session.execute(select(trial.key, trial.participant_id, trial.item_id)
                               .join(response, response.trial_id == trial.id)
                               .join(person, person.id == trial.participant_id)
                               .where(person.study_id == study_id)).all()
        finished = session.scalar(select(func.count(person.completed_at)).where(person.study_id == study_id))
    store.close()
    keys = [row.key for row in rows]
    pairs = {(row.participant_id, row.item_id) for row in rows}
    return {"stored": len(rows), "lost": len(set(acknowledged) - set(keys)),
            "duplicated_trials": len(keys) - len(set(keys)),
            "duplicated_items": len(rows) - len(pairs), "finished": finished}


def percentile(values: list[float], share: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values) * 1000.0, share)) if values else float("nan")


def run(name: str, db_url: str, folder: str, args) -> None:
    import secrets

    slug = f"bench-{secrets.token_hex(4)}"
    context = multiprocessing.get_context("spawn")
    ready, stop, cpu = context.Queue(), context.Event(), context.Queue()
    server = context.Process(target=serve, args=(folder, db_url, slug, args.items, ready, stop, cpu), daemon=True)
    server.start()
    url = ready.get(timeout=300)
    print(f"\n== {name}: server {url}, {args.participants} participants x {args.items} items, think time "
          f"{args.think:g} s (mean), load average {os.getloadavg()[0]:.2f}")
    generator_cpu = time.process_time()
    times, acknowledged, wall = asyncio.run(load(url, slug, args.participants, args.think))
    generator_cpu = time.process_time() - generator_cpu
    load_after = os.getloadavg()
    stop.set()
    cpu_s, handler = cpu.get(timeout=60)
    cpu_ms = cpu_s * 1000.0
    server.join(timeout=60)
    counts = check_database(db_url, folder, slug, acknowledged)
    responses = len(times["respond"])
    p50, p95 = percentile(times["respond"], 50), percentile(times["respond"], 95)
    print(f"{responses} responses in {wall:.1f} s ({responses / wall:.0f}/s); load average now "
          f"{load_after[0]:.2f} (1 min) {load_after[1]:.2f} (5 min) on {os.cpu_count()} cores")
    print(f"{'figure':<40}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for figure in ("respond", "stimuli", "join"):
        values = times[figure]
        print(f"{figure + (' (both sides)' if figure == 'stimuli' else ''):<40}{percentile(values, 50):>10.1f}"
              f"{percentile(values, 95):>10.1f}{max(values) * 1000:>10.1f}")
    for label, keep in (("while people arrive (first 10 s)", lambda moment: moment < 10.0),
                        ("afterwards", lambda moment: moment >= 10.0)):
        values = [value for value, moment in zip(times["respond"], times["respond_at"]) if keep(moment)]
        print(f"{'respond ' + label:<40}{percentile(values, 50):>10.1f}{percentile(values, 95):>10.1f}"
              f"{max(values, default=float('nan')) * 1000:>10.1f}")
    print(f"{'respond handler (server, in its thread)':<40}{percentile(handler, 50):>10.1f}"
          f"{percentile(handler, 95):>10.1f}{max(handler) * 1000:>10.1f}")
    print(f"{name}: respond p50 {p50:.1f} ms, p95 {p95:.1f} ms vs target {TARGET_P95_MS:.0f} ms: ratio "
          f"{p95 / TARGET_P95_MS:.2f} ({'met' if p95 <= TARGET_P95_MS else 'NOT met'})")
    print(f"server CPU during the load: {cpu_ms / 1000:.1f} s = {cpu_ms / responses:.1f} ms per response "
          "(its share of the joins, trial and stimulus requests included)")
    print(f"generator CPU (this process, {args.participants} simulated browsers): {generator_cpu:.1f} s = "
          f"{generator_cpu * 1000 / responses:.1f} ms per response, {100 * generator_cpu / wall:.0f}% of one core")
    print(f"in the store: {counts['stored']} responses stored for {len(acknowledged)} acknowledged; lost "
          f"{counts['lost']}, duplicated trials {counts['duplicated_trials']}, duplicated (participant, item) "
          f"{counts['duplicated_items']}; {counts['finished']} of {args.participants} participants finished "
          f"(requests retried after the server closed an idle keep-alive connection: {sum(times['retries'])})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=100)
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--think", type=float, default=3.0, help="mean seconds between seeing a pair and answering")
    parser.add_argument("--pg", default=os.environ.get("STUDIO_TEST_PG_URL"),
                        help="PostgreSQL URL (default: $STUDIO_TEST_PG_URL; without one only SQLite runs)")
    parser.add_argument("--only", choices=("sqlite", "postgresql"), default=None)
    args = parser.parse_args()
    backends = []
    if args.only in (None, "sqlite"):
        folder = tempfile.mkdtemp(prefix="bench-studies-")
        backends.append(("SQLite", f"sqlite:///{Path(folder) / 'store.db'}", folder))
    if args.only in (None, "postgresql"):
        if args.pg:
            backends.append(("PostgreSQL", args.pg, tempfile.mkdtemp(prefix="bench-studies-")))
        else:
            print("PostgreSQL: skipped (no --pg and no $STUDIO_TEST_PG_URL; eval \"$(.ci/start-postgres)\" starts one)")
    for name, db_url, folder in backends:
        run(name, db_url, folder, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
