"""Benchmark: a crowd of annotators that behave like people, against one studio server on this machine.

    python benchmarks/bench_crowd.py [--annotators 300] [--think 20 40] [--seconds 90] [--ramp 30]
                                     [--stroke-every 4] [--saturation-annotators 64] [--saturation-seconds 30]
                                     [--tasks 4000] [--skip sqlite|postgresql|people|saturation] [--quick]

The server (``studio.server.BackgroundServer``, uvicorn) runs in a child process of its own over a fresh
store: file SQLite, and PostgreSQL when ``$STUDIO_TEST_PG_URL`` is set (its schema ``public`` is DROPPED
and recreated: never point it at a database whose contents matter). Tasks: human contact on the open
body (labels chair + supporting, a small seeded PNG each, the category prior as pre-annotation).

The load generator is this process: one asyncio loop. Each annotator is one browser: an ``httpx.AsyncClient``
for the page and Gradio's queue protocol as the page speaks it (``POST queue/join`` then the event stream
``GET queue/data`` until ``process_completed``), and two keep-alive connections of a minimal HTTP/1.1 client
(``benchmarks/keepalive.py``, the same cookies) for the frequent requests: checks, submissions and the task's
parts. httpx cost about 10 ms of this machine's CPU per submission (its three requests), more than the server's
own share; the minimal client costs about 1.5 ms (printed). Each annotator, like a person:

1. opens the page (``GET /annotate/?worker=ID``: the session cookie) and starts its session
   (``start_session``), fetches the body mesh once (the painter caches it) and, for every task, the
   task's starting layers and image (the cached URLs the page hands out);
2. paints for a think time drawn uniformly from ``--think`` seconds, one stroke every ``--stroke-every``
   seconds; each stroke is the painter's server check, sent as the page sends it: to the JSON endpoint
   with the task's ticket (``studio.painter_api``): paint -> server-check;
3. submits as the page does when its task came with a ticket: ``POST /studio/api/submit`` (ticket, ~300
   vertex ids per label); the next task comes back in the answer (``--queued-submit``: the queued Gradio
   ``submit`` event instead, as pages without tickets and gradio_client users send it).
   submit-to-next-task: from sending the submission to having the next task's starting layers and image.

Phases per backend: *costs* (one annotator alone repeats each action: the JSON submit and the queued submit
event, a stroke check through the JSON endpoint and through a queued Gradio event, the two cached GETs; the
server's and the generator's CPU per action: where a submission's CPU goes), *people* (``--annotators``, ramped up over ``--ramp`` s, measured for ``--seconds``
after the ramp) and *saturation* (think time 0, no strokes: ``--saturation-annotators`` back to back for
``--saturation-seconds``). After each phase the database is compared with what the annotators were told:
lost = acknowledged submissions missing from the DB; duplicated = a (task, annotator) stored twice or a
submission stored more often than acknowledged.

CPU: the server process's and this generator's own CPU seconds over each window are printed (per
submission and as a share of the 2 cores), next to the load average. Event-loop lag: a thread in the
server process schedules an empty callback on uvicorn's loop every 20 ms and times how long it waits to
run (anything blocking the loop, or the GIL held by other threads, shows here); p50/p95/max per window. Prints figures and ratios to the
targets only; nothing here asserts.

Targets (issue 17, this 2-core machine): people (300): p95 submit-to-next-task <= 300 ms, 0 lost, 0
duplicated, paint -> server-check p95 <= 150 ms; saturation >= 100 submissions/s.
"""
from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from annotations.store import reset_postgres_schema  # noqa: E402
from benchmarks.keepalive import KeepAliveClient  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "tests" / "studio"))
from raw_queue import event_end  # noqa: E402  (Gradio's queue protocol, as the tests speak it)

TOPOLOGY, VERTICES = "openbody-v1", 10614
LABELS = ("chair", "supporting")
IDS_PER_LABEL = 300
SUBMIT_P95_TARGET_MS = 300.0
CHECK_P95_TARGET_MS = 150.0
SATURATION_TARGET_PER_S = 100.0
EVENTS = ("start_session", "submit", "check_painting")


# ---- the server, in a process of its own ---------------------------------------------------------------
def serve(db_url: str, workdir: str, tasks: int, redundancy: int, pipe) -> None:
    """Child process: a fresh studio over ``db_url`` with ``tasks`` tasks; sends its URL, serves until told."""
    os.environ["STUDIO_VAR"] = str(Path(workdir) / "var")
    os.environ["GRADIO_TEMP_DIR"] = str(Path(workdir) / "gradio-cache")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import io

    import numpy as np
    from PIL import Image

    from annotations.batch import add_task
    from app import build_studio
    from engine.body.model import load_open_body_data
    from studio.server import BackgroundServer
    from studio.settings import StudioSettings

    load_open_body_data()
    models = Path(workdir) / "models"
    models.mkdir(exist_ok=True)
    # Every simulated annotator comes from 127.0.0.1: the per-address limit on session starts would measure
    # itself (a real crowd arrives from many addresses; docs/SECURITY.md).
    settings = StudioSettings(models_dir=models, db_url=db_url, data_dir=Path(workdir) / "data", device="cpu",
                              session_starts_per_minute=1_000_000)
    studio = build_studio(settings)
    studio.warm_up()
    started = time.perf_counter()
    for index in range(tasks):
        pixels = np.random.default_rng(index).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, format="PNG", compress_level=1)
        add_task(studio.store, buffer.getvalue(), f"crowd_{index:05d}.png", labels=list(LABELS), topology=TOPOLOGY,
                 redundancy=redundancy)
    made_s = time.perf_counter() - started
    server = BackgroundServer(studio)
    lag = LoopLag(server._server.servers[0].get_loop())  # uvicorn's loop (bench-only: a private attribute)
    if os.environ.get("BENCH_SLOW_CALLBACKS_MS"):  # name what blocks the loop: asyncio's debug mode logs it
        import logging

        logging.basicConfig(level=logging.WARNING)
        lag.loop.slow_callback_duration = float(os.environ["BENCH_SLOW_CALLBACKS_MS"]) / 1000
        lag.loop.call_soon_threadsafe(lag.loop.set_debug, True)
    pipe.send({"url": server.url, "made_s": made_s})
    while (message := pipe.recv()) != "stop":  # ("lag", start, end): the loop's lag over a window
        pipe.send(lag.figures(*message[1:]))
    lag.stop()
    server.stop()


class LoopLag:
    """Samples the event loop's lag from a thread: how long an empty callback waits to run on the loop."""

    EVERY_S = 0.02

    def __init__(self, loop):
        import threading

        self.loop, self.samples, self._stop = loop, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="loop-lag")
        self._thread.start()

    def _run(self) -> None:
        import threading

        while not self._stop.wait(self.EVERY_S):
            ran = threading.Event()
            started = time.monotonic()
            self.loop.call_soon_threadsafe(ran.set)
            if not ran.wait(30):
                break
            self.samples.append((started, time.monotonic() - started))

    def figures(self, start: float, end: float) -> dict:
        import numpy as np

        lags = np.array([lag for at, lag in list(self.samples) if start <= at < end]) * 1000
        if lags.size == 0:
            return {"samples": 0}
        return {"samples": int(lags.size), "p50_ms": float(np.percentile(lags, 50)),
                "p95_ms": float(np.percentile(lags, 95)), "p99_ms": float(np.percentile(lags, 99)),
                "max_ms": float(lags.max()), "over_50ms": int((lags > 50).sum())}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- one annotator -------------------------------------------------------------------------------------
@dataclass
class Figures:
    submit_s: list[float] = field(default_factory=list)  # submit -> next task's parts fetched (people window)
    submit_event_s: list[float] = field(default_factory=list)  # submit -> the event's answer
    check_s: list[float] = field(default_factory=list)
    acked: list[tuple[str, int]] = field(default_factory=list)  # (worker, task) of every acknowledged submission
    in_window: int = 0
    errors: list[str] = field(default_factory=list)
    loop_lag: dict = field(default_factory=dict)  # the server's event-loop lag over the window (LoopLag)


class Annotator:
    def __init__(self, base: str, fns: dict[str, int], worker: str, rng: random.Random, queued: bool = False):
        import httpx

        self.page, self.fns, self.worker, self.rng = base + "/annotate", fns, worker, rng
        self.queued = queued  # submit through Gradio's queue even when the task came with a ticket
        self.done = 0
        self.base = base
        # Gradio's queue protocol (the page, start_session, the queued events) through httpx; idle connections
        # are dropped before uvicorn's 5 s keep-alive ends (this client does not retry a request that meets
        # a connection the server just closed, so it must not meet one).
        self.client = httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=4, keepalive_expiry=2.0))
        # The hot requests (submit, check, the task's parts) as a browser sends them, on a minimal keep-alive
        # client of the same cookies: its CPU per request is a fraction of httpx's (benchmarks/keepalive.py).
        # Two connections, as a browser opens several: the task's two parts are fetched in parallel.
        parsed = urlparse(base)
        self.browser, self.second = KeepAliveClient(parsed.hostname, parsed.port), KeepAliveClient(parsed.hostname,
                                                                                                    parsed.port)
        self.second.cookies = self.browser.cookies
        self.session_hash = uuid.uuid4().hex[:11]
        self.task: dict | None = None

    async def open_page(self) -> None:
        """The annotator page (its response sets the studio-session cookie, which both clients then send)."""
        await self.client.get(f"{self.page}/", params={"worker": self.worker})
        self.browser.cookies.update(self.client.cookies.items())

    async def post_json(self, path: str, body: dict, what: str) -> dict:
        status, answer = await self.browser.request("POST", path, body)
        if status != 200:
            raise RuntimeError(f"{what}: HTTP {status} {answer[:120]!r}")
        return json.loads(answer)

    async def call(self, name: str, data: list) -> list:
        """One queued event, as the page sends it; its outputs (``RuntimeError`` with the error shown)."""
        joined = await self.client.post(f"{self.page}/gradio_api/queue/join", json={
            "data": data, "fn_index": self.fns[name], "session_hash": self.session_hash, "event_data": None,
            "trigger_id": None})
        if joined.status_code != 200:
            raise RuntimeError(f"{name}: HTTP {joined.status_code} {joined.text[:120]}")
        event_id = joined.json()["event_id"]
        async with self.client.stream("GET", f"{self.page}/gradio_api/queue/data",
                                      params={"session_hash": self.session_hash}) as stream:
            async for line in stream.aiter_lines():
                if (outcome := event_end(line, event_id)) is not None:
                    if not outcome.success:
                        raise RuntimeError(f"{name}: {str(outcome.error)[:160]}")
                    return outcome.data or []
        raise RuntimeError(f"{name}: the event stream ended early")

    async def get(self, url: str, second: bool = False) -> bytes:
        status, body = await (self.second if second else self.browser).request("GET", url,
                                                                                headers={"Accept-Encoding": "gzip"})
        if status != 200:
            raise RuntimeError(f"GET {url.split('/')[2]}: HTTP {status}")
        return body

    async def take(self, outputs: list) -> None:
        """The task the outputs hand over: fetch its parts as the painter does."""
        payload = outputs[4] if len(outputs) > 4 else ""
        self.task = json.loads(payload) if payload else None
        if self.task is None:
            return
        if "annotation_url" in self.task:
            await asyncio.gather(self.get(self.task["annotation_url"]), self.get(self.task["image_url"], True))

    async def submit(self) -> tuple[str, list]:
        """Submit the painting as the page does: the JSON endpoint with the task's ticket (the next task in
        the answer), else the queued event. (status text, outputs in the queued event's order)."""
        if self.queued or "ticket" not in self.task:
            outputs = await self.call("submit", [self.painting(), None])
            return str(outputs[5]), outputs
        answer = await self.post_json("/studio/api/submit", {
            "ticket": self.task["ticket"], "painting": self.painting(), "done": self.done}, "submit")
        self.done = answer["done"]
        return answer["status"], [None, answer["image"], answer["text"], answer["progress"], answer["payload"],
                                  answer["status"]]

    async def check(self) -> None:
        """One stroke's server check, as the page sends it: the JSON endpoint with the task's ticket
        (``studio.painter_api``), or the queued event when the page gave no ticket."""
        if "ticket" not in self.task:
            await self.call("check_painting", [self.painting(), None])
            return
        await self.post_json(self.task["check_url"], {"ticket": self.task["ticket"], "painting": self.painting()},
                             "check")

    def painting(self) -> str:
        layers = {label: self.rng.sample(range(VERTICES), IDS_PER_LABEL) for label in self.task["labels"]}
        return json.dumps({"task": self.task["task_id"], "topology": self.task["topology"], "layers": layers,
                           "seconds": 1.0})

    async def run(self, think: tuple[float, float], stroke_every: float, window: tuple[float, float],
                  stop_at: float, figures: Figures) -> None:
        try:
            await self.open_page()
            outputs = await self.call("start_session", [f"?worker={self.worker}"])
            await self.get(json.loads(outputs[4])["mesh_url"])  # once: the painter caches the body mesh
            await self.take(outputs)
            while self.task is not None and time.monotonic() < stop_at:
                think_s = self.rng.uniform(*think)
                painted_until = time.monotonic() + think_s
                while think_s > 0 and time.monotonic() + stroke_every < painted_until:
                    await asyncio.sleep(stroke_every)
                    started = time.monotonic()
                    await self.check()
                    if window[0] <= started < window[1]:
                        figures.check_s.append(time.monotonic() - started)
                await asyncio.sleep(max(0.0, painted_until - time.monotonic()))
                task_id = self.task["task_id"]
                started = time.monotonic()
                status, outputs = await self.submit()
                answered = time.monotonic()
                if not status.startswith(f"Submitted task {task_id}"):
                    raise RuntimeError(f"submit: unexpected status {status[:80]!r}")
                figures.acked.append((self.worker, task_id))
                await self.take(outputs)
                if window[0] <= started < window[1]:
                    figures.in_window += 1
                    figures.submit_s.append(time.monotonic() - started)
                    figures.submit_event_s.append(answered - started)
        except Exception as error:  # the figures show errors; one annotator's failure does not stop the run
            figures.errors.append(f"{type(error).__name__}: {str(error)[:200]}")
        finally:
            await self.client.aclose()
            self.browser.close()
            self.second.close()


# ---- where the server's CPU goes -------------------------------------------------------------------------
COST_ACTIONS = ("submit, JSON endpoint (+ next task)", "submit, queued Gradio event (+ next task)",
                "check, JSON endpoint", "check, queued Gradio event", "GET starting layers (cached)",
                "GET image (cached)")


async def measure_costs(url: str, server_pid: int, fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Server CPU (ms) and this generator's CPU (ms) per action, one annotator doing each ``repeats`` times in
    a row (nothing else running against the server)."""
    annotator = Annotator(url, fns, f"costs-{uuid.uuid4().hex[:6]}", random.Random(1))
    await annotator.open_page()
    outputs = await annotator.call("start_session", [f"?worker={annotator.worker}"])
    await annotator.take(outputs)

    async def submit():  # the submission alone (the next task's parts are fetched by the GET actions below)
        _, outputs = await annotator.submit()
        annotator.task = json.loads(outputs[4]) if outputs[4] else None

    async def submit_queued():
        outputs = await annotator.call("submit", [annotator.painting(), None])
        annotator.task = json.loads(outputs[4]) if outputs[4] else None

    async def check_queued():
        await annotator.call("check_painting", [annotator.painting(), None])

    actions = dict(zip(COST_ACTIONS, (submit, submit_queued, annotator.check, check_queued,
                                      lambda: annotator.get(annotator.task["annotation_url"]),
                                      lambda: annotator.get(annotator.task["image_url"]))))
    costs = {}
    try:
        for name, action in actions.items():
            await action()  # warm
            server, own = process_cpu_s(server_pid), time.process_time()
            for _ in range(repeats):
                await action()
            costs[name] = (1000 * (process_cpu_s(server_pid) - server) / repeats,
                           1000 * (time.process_time() - own) / repeats)
    finally:
        await annotator.client.aclose()
        annotator.browser.close()
        annotator.second.close()
    return costs


def print_costs(costs: dict[str, tuple[float, float]]) -> None:
    print("    CPU per action (one annotator alone, nothing else on the server):")
    for name, (server, own) in costs.items():
        print(f"      {name:<32} server {server:6.1f} ms   generator {own:5.1f} ms")


# ---- phases --------------------------------------------------------------------------------------------
@dataclass
class PhaseResult:
    name: str
    annotators: int
    window_s: float
    figures: Figures
    server_cpu_s: float
    generator_cpu_s: float
    lost: int
    duplicated: int
    load: float

    @property
    def per_s(self) -> float:
        return self.figures.in_window / self.window_s if self.window_s else float("nan")


def percentile_ms(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values) * 1000, q)) if values else float("nan")


async def run_phase(name: str, url: str, server_pid: int, fns: dict, annotators: int, think: tuple[float, float],
                    stroke_every: float, ramp_s: float, seconds: float, seed: int,
                    queued: bool = False) -> tuple[Figures, float, float, tuple[float, float]]:
    figures = Figures()
    rng = random.Random(seed)
    now = time.monotonic()
    window = (now + ramp_s, now + ramp_s + seconds)
    tag = uuid.uuid4().hex[:6]
    crowd = [Annotator(url, fns, f"{name}-{tag}-{index:04d}", random.Random(rng.random()), queued)
             for index in range(annotators)]

    async def start(index: int, annotator: Annotator):
        await asyncio.sleep(ramp_s * index / max(1, annotators))
        await annotator.run(think, stroke_every, window, window[1], figures)

    runs = [asyncio.create_task(start(index, annotator)) for index, annotator in enumerate(crowd)]
    await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
    server_cpu, own_cpu = process_cpu_s(server_pid), time.process_time()
    await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
    server_cpu, own_cpu = process_cpu_s(server_pid) - server_cpu, time.process_time() - own_cpu
    await asyncio.gather(*runs)
    return figures, server_cpu, own_cpu, window


def count_in_db(db_url: str, acked: list[tuple[str, int]]) -> tuple[int, int]:
    """(lost, duplicated) of this phase's acknowledged submissions, counted in the database."""
    import sqlalchemy as sa

    from annotations import models

    workers = sorted({worker for worker, _ in acked})
    if not workers:
        return 0, 0
    subs, people = models.SubmissionRow.__table__, models.AnnotatorRow.__table__
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(people.c.external_id, subs.c.task_id, sa.func.count())
                .join(subs, subs.c.annotator_id == people.c.id)
                .where(people.c.external_id.in_(workers)).group_by(people.c.external_id, subs.c.task_id)).all()
    finally:
        engine.dispose()
    stored = {(worker, task): count for worker, task, count in rows}
    lost = sum(1 for key in set(acked) if key not in stored)
    duplicated = sum(count - 1 for count in stored.values() if count > 1) + max(0, len(acked) - len(set(acked)))
    return lost, duplicated


def page_functions(url: str) -> dict[str, int]:
    import httpx

    config = httpx.get(f"{url}/annotate/config", timeout=60).json()
    found = {dependency.get("api_name"): dependency.get("id", index)
             for index, dependency in enumerate(config["dependencies"])}
    return {name: found[name] for name in EVENTS}


def run_backend(backend: str, db_url: str, args, workdir: Path) -> list[PhaseResult]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    server = context.Process(target=serve, args=(db_url, str(workdir), args.tasks, args.redundancy, theirs),
                             name=f"studio-{backend}")
    server.start()
    try:
        if not ours.poll(900):
            raise RuntimeError("the studio server did not start")
        started = ours.recv()
        print(f"\n[{backend}] server {started['url']} (pid {server.pid}); {args.tasks} tasks made in "
              f"{started['made_s']:.1f} s")
        fns = page_functions(started["url"])
        if "costs" not in args.skip:
            print(f"  costs: each action {args.cost_repeats} times in a row, one annotator", flush=True)
            print_costs(asyncio.run(measure_costs(started["url"], server.pid, fns, args.cost_repeats)))
        phases = []
        if "people" not in args.skip:
            phases.append(("people", args.annotators, tuple(args.think), args.stroke_every, args.ramp, args.seconds))
        if "saturation" not in args.skip:
            phases.append(("saturation", args.saturation_annotators, (0.0, 0.0), 0.0,
                           min(args.ramp, 5.0), args.saturation_seconds))
        results = []
        for name, annotators, think, stroke_every, ramp_s, seconds in phases:
            print(f"  {name}: {annotators} annotators, think {think[0]:g}-{think[1]:g} s"
                  + (f", a stroke every {stroke_every:g} s" if think[1] > 0 else "")
                  + f", ramp {ramp_s:g} s, window {seconds:g} s ...", flush=True)
            figures, server_cpu, own_cpu, window = asyncio.run(run_phase(
                name, started["url"], server.pid, fns, annotators, think, stroke_every, ramp_s, seconds, args.seed,
                args.queued_submit))
            ours.send(("lag", *window))
            figures.loop_lag = ours.recv()
            lost, duplicated = count_in_db(db_url, figures.acked)
            result = PhaseResult(name, annotators, seconds, figures, server_cpu, own_cpu, lost, duplicated,
                                 os.getloadavg()[0])
            print_phase(result)
            results.append(result)
        return results
    finally:
        ours.send("stop")
        server.join(60)
        if server.is_alive():
            server.terminate()


def print_phase(result: PhaseResult) -> None:
    figures = result.figures
    count = max(1, figures.in_window)
    print(f"    submissions in the window: {figures.in_window} -> {result.per_s:.1f}/s; acknowledged in all "
          f"{len(figures.acked)}; lost {result.lost}, duplicated {result.duplicated}; errors {len(figures.errors)}")
    print(f"    submit -> next task loaded: p50 {percentile_ms(figures.submit_s, 50):.0f} ms, "
          f"p95 {percentile_ms(figures.submit_s, 95):.0f} ms (the submit event alone: p50 "
          f"{percentile_ms(figures.submit_event_s, 50):.0f} ms, p95 {percentile_ms(figures.submit_event_s, 95):.0f} ms)")
    if figures.check_s:
        print(f"    paint -> server check: {len(figures.check_s)} strokes, p50 {percentile_ms(figures.check_s, 50):.0f} ms, "
              f"p95 {percentile_ms(figures.check_s, 95):.0f} ms")
    lag = figures.loop_lag
    if lag.get("samples"):
        print(f"    server event-loop lag ({lag['samples']} samples): p50 {lag['p50_ms']:.1f} ms, p95 "
              f"{lag['p95_ms']:.1f} ms, p99 {lag['p99_ms']:.1f} ms, max {lag['max_ms']:.0f} ms; "
              f"{lag['over_50ms']} samples over 50 ms")
    print(f"    CPU over the window: server {result.server_cpu_s:.1f} s ({result.server_cpu_s / result.window_s:.2f} "
          f"cores, {1000 * result.server_cpu_s / count:.1f} ms per submission), load generator "
          f"{result.generator_cpu_s:.1f} s ({result.generator_cpu_s / result.window_s:.2f} cores, "
          f"{1000 * result.generator_cpu_s / count:.1f} ms per submission); load average {result.load:.1f} on "
          f"{os.cpu_count()} cores")
    for message in sorted(set(figures.errors))[:5]:
        print(f"    error ({figures.errors.count(message)}x): {message}")


def summary(results: dict[str, list[PhaseResult]]) -> None:
    print("\nsummary (ratio = measured / target; for 'at most' targets, <= 1 meets it)")
    print(f"  {'figure':<58}  {'measured':>10}  {'target':>8}  {'ratio':>5}  met")
    for backend, phases in results.items():
        for phase in phases:
            figures = phase.figures
            if phase.name == "people":
                p95 = percentile_ms(figures.submit_s, 95)
                check = percentile_ms(figures.check_s, 95)
                rows = [(f"{backend}: {phase.annotators} people, p95 submit -> next task", f"{p95:.0f} ms",
                         f"<= {SUBMIT_P95_TARGET_MS:.0f}", p95 / SUBMIT_P95_TARGET_MS, p95 <= SUBMIT_P95_TARGET_MS),
                        (f"{backend}: {phase.annotators} people, p95 paint -> server check", f"{check:.0f} ms",
                         f"<= {CHECK_P95_TARGET_MS:.0f}", check / CHECK_P95_TARGET_MS, check <= CHECK_P95_TARGET_MS),
                        (f"{backend}: {phase.annotators} people, lost / duplicated", f"{phase.lost} / {phase.duplicated}",
                         "0 / 0", None, phase.lost == 0 and phase.duplicated == 0)]
            else:
                rows = [(f"{backend}: saturation ({phase.annotators} back to back), submissions/s",
                         f"{phase.per_s:.1f}", f">= {SATURATION_TARGET_PER_S:.0f}",
                         phase.per_s / SATURATION_TARGET_PER_S, phase.per_s >= SATURATION_TARGET_PER_S),
                        (f"{backend}: saturation, lost / duplicated", f"{phase.lost} / {phase.duplicated}", "0 / 0",
                         None, phase.lost == 0 and phase.duplicated == 0)]
            rows.append((f"{backend}: {phase.name}, server / generator CPU per submission",
                         f"{1000 * phase.server_cpu_s / max(1, figures.in_window):.1f} / "
                         f"{1000 * phase.generator_cpu_s / max(1, figures.in_window):.1f} ms", "-", None, None))
            for label, measured, target, ratio, met in rows:
                shown = "-" if ratio is None else f"{ratio:.2f}"
                verdict = "" if met is None else ("yes" if met else "NO")
                print(f"  {label:<58}  {measured:>10}  {target:>8}  {shown:>5}  {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, default=300)
    parser.add_argument("--think", type=float, nargs=2, default=(20.0, 40.0), metavar=("MIN_S", "MAX_S"),
                        help="think time per task, drawn uniformly (default 20 40)")
    parser.add_argument("--stroke-every", type=float, default=4.0, help="seconds between strokes while painting")
    parser.add_argument("--seconds", type=float, default=90.0, help="measured window after the ramp (default 90)")
    parser.add_argument("--ramp", type=float, default=30.0, help="seconds over which the annotators arrive")
    parser.add_argument("--saturation-annotators", type=int, default=64,
                        help="back-to-back annotators of the saturation phase (default 64: each stays under the "
                             "server's limit of 240 submissions a minute per annotator up to 256 submissions/s)")
    parser.add_argument("--saturation-seconds", type=float, default=30.0)
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--redundancy", type=int, default=3)
    parser.add_argument("--skip", action="append", default=[], choices=("sqlite", "postgresql", "people", "saturation", "costs"))
    parser.add_argument("--queued-submit", action="store_true",
                        help="submit through the queued Gradio event (the old path) instead of the JSON endpoint")
    parser.add_argument("--cost-repeats", type=int, default=60, help="repeats per action in the costs phase")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 40 annotators thinking 2-4 s for 15 s, saturation 10 s, 600 tasks")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.annotators, args.think, args.stroke_every, args.seconds, args.ramp = 40, (2.0, 4.0), 1.0, 15.0, 5.0
        args.saturation_seconds, args.tasks = 10.0, 600
    if args.annotators < 1 or args.saturation_annotators < 1 or args.tasks < 1 or args.seconds <= 0:
        parser.error("--annotators, --saturation-annotators, --tasks and --seconds must be positive")
    if not 0 <= args.think[0] <= args.think[1]:
        parser.error("--think MIN_S MAX_S needs 0 <= MIN_S <= MAX_S")
    if args.stroke_every <= 0:
        parser.error("--stroke-every must be positive")

    workdir = Path(tempfile.mkdtemp(prefix="bench_crowd_"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    print(f"machine: {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}; 1-minute load average "
          f"{os.getloadavg()[0]:.2f}; work folder {workdir} (deleted at exit)")
    backends = []
    if "sqlite" not in args.skip:
        backends.append(("sqlite-file", f"sqlite:///{workdir / 'sqlite' / 'store.db'}", workdir / "sqlite"))
    if "postgresql" not in args.skip:
        url = os.environ.get("STUDIO_TEST_PG_URL")
        note = "STUDIO_TEST_PG_URL is not set (eval \"$(.ci/start-postgres)\" starts a server)" if not url \
            else reset_postgres_schema(url)
        if note:
            print(f"\n[postgresql] skipped: {note}")
        else:
            backends.append(("postgresql", url, workdir / "postgresql"))
    results = {}
    for backend, url, folder in backends:
        folder.mkdir(parents=True, exist_ok=True)
        results[backend] = run_backend(backend, url, args, folder)
    summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
