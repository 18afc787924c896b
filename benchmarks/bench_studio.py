"""Benchmark: the Interaction Studio server end to end: the annotator page in Chromium, and many annotators at once.

    python benchmarks/bench_studio.py [--annotators 32] [--seconds 60] [--tasks 3000] [--redundancy 3]
                                      [--contexts 5] [--strokes 20] [--db URL] [--store-concurrency N]
                                      [--profile] [--skip browser|load|strokes-under-load]

The real server (``studio.server.BackgroundServer``: uvicorn on a thread of this process) over a fresh
store in a temporary folder (file SQLite by default), with ``--tasks`` human-contact tasks on the open
body (``openbody-v1``, labels chair + supporting, each a small seeded PNG, no stored prediction: the
page shows the category prior). The open body is generated into its disk cache before the server
starts, as a restarted server would find it.

1. browser (Playwright driving Debian's Chromium with software WebGL):
   - page load to interactive painter: ``page.goto(/annotate/?worker=...)`` until
     ``#studio-painter[data-ready="1"]`` is visible; the first (cold: fresh server, fresh browser) load
     on its own, then the median and max of ``--contexts`` fresh browser contexts. Target <= 3 s.
     The in-page time (navigation start -> data-ready) and a timeline of the load are printed too.
   - paint -> server round trip: a mouse drag on the chest; from ``pointerup`` to the moment
     ``#painter-server-counts`` shows the server's new counts, timed inside the page with
     ``performance.now()``; median and p95 of ``--strokes`` strokes (paint and erase alternate, so
     the counts change every time), and the painter's own ``state().perf``. Target <= 150 ms.
   - two strokes 40 ms apart: does the server's check catch up with the painter's final counts?
2. load: ``--annotators`` simulated annotators, threads in a child process (so that the load
   generator does not share the server's interpreter lock), each with its own
   ``gradio_client.Client`` and worker id, looping submit (the next task comes back with the
   receipt) for ``--seconds``. Meanwhile the browser page measures ``--strokes`` more round trips.
   Then the database is compared with what the annotators were told: every acknowledged submission
   stored (lost: 0), no submission key or (task, annotator) twice and no task above its redundancy
   (duplicated: 0). ``--profile`` adds server-side stage timings (wall and CPU, the SQLite write
   lock's wait and hold) and a sampling profile of the server's threads during the window.

Prints figures only; nothing here asserts and the exit status is 0 whatever the figures. All
processes share this machine's cores: the load generator's and the browser's CPU time come out of
the server's, and the load average is printed at the start and the end.
``--db URL`` uses that store as it is (say a PostgreSQL database): the tasks made here are added to it,
and the checks count only this run's annotators.
"""
from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import functools
import io
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

TOPOLOGY = "openbody-v1"
LABELS = ("chair", "supporting")
IDS_PER_LABEL = 300
VIEWPORT = {"width": 1400, "height": 1000}
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]

PAGE_LOAD_TARGET_MS = 3000.0
ROUND_TRIP_TARGET_MS = 150.0
STORE_TARGET_PER_S = 500.0  # bench_annotations (a): the store alone, 16 writer threads, no web stack

# Records when the painter first reports data-ready="1" (ms since navigation start); installed before any page script.
READY_INIT_JS = """(() => {
  window.__bench = { readyAt: null };
  const check = () => {
    const el = document.getElementById('studio-painter');
    if (el && el.dataset.ready === '1' && window.__bench.readyAt === null) window.__bench.readyAt = performance.now();
    return window.__bench.readyAt !== null;
  };
  const observer = new MutationObserver(() => { if (check()) observer.disconnect(); });
  observer.observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-ready'] });
})();"""

TIMELINE_JS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  return {
    ready: window.__bench ? window.__bench.readyAt : null,
    dcl: nav ? nav.domContentLoadedEventEnd : null,
    resources: performance.getEntriesByType('resource').map((e) => ({
      name: e.name, start: e.startTime, end: e.responseEnd, bytes: e.transferSize, body: e.decodedBodySize })),
  };
}"""

# Arms one round-trip measurement: pointerup (capture, before the painter sees it), the painter's click of the
# hidden sync button, and the first change of the server's counts text after the pointerup.
ARM_JS = """() => {
  const node = document.getElementById('painter-server-counts');
  const previous = node ? node.textContent : '';
  const rt = { up: null, sync: null, changed: null, text: null };
  window.__rt = rt;
  const onUp = () => { if (rt.up === null) rt.up = performance.now(); };
  const onClick = (event) => {
    if (rt.up !== null && rt.sync === null && event.target.closest && event.target.closest('#painter-sync')) {
      rt.sync = performance.now();
    }
  };
  const observer = new MutationObserver(() => {
    const now = performance.now();
    const el = document.getElementById('painter-server-counts');
    const text = el ? el.textContent : '';
    if (rt.up === null || text === previous) return;
    rt.changed = now;
    rt.text = text;
    observer.disconnect();
    window.removeEventListener('pointerup', onUp, true);
    document.removeEventListener('click', onClick, true);
  });
  window.addEventListener('pointerup', onUp, true);
  document.addEventListener('click', onClick, true);
  observer.observe(document.body, { subtree: true, childList: true, characterData: true });
}"""

SERVER_COUNTS = re.compile(r"([^\s:·■][^:·■]*?): (\d+) vertices")


# ---- small helpers ------------------------------------------------------------------------------------------
def percentile(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def describe_error(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text if len(text) < 240 else text[:237] + "..."


def seeded_png(seed: int, size=(48, 64)) -> bytes:
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# ---- setup --------------------------------------------------------------------------------------------------
def make_tasks(store, count: int, redundancy: int, seed: int) -> tuple[int, int]:
    """``count`` human-contact tasks (distinct seeded PNGs) through ``add_task``; returns (first id, last id)."""
    from annotations.batch import add_task

    ids = [add_task(store, seeded_png(seed * 1_000_003 + index), f"bench_{index:05d}.png", labels=list(LABELS),
                    topology=TOPOLOGY, redundancy=redundancy) for index in range(count)]
    return min(ids), max(ids)


# ---- 1. the browser -----------------------------------------------------------------------------------------
@dataclass
class LoadSample:
    wall_ms: float
    ready_ms: float | None  # in the page: navigation start -> data-ready="1"
    timeline: dict


@dataclass
class BrowserResult:
    cold: LoadSample | None = None
    warm: list[LoadSample] = field(default_factory=list)
    round_trips: list[float] = field(default_factory=list)  # pointerup -> server counts changed, ms
    to_sync: list[float] = field(default_factory=list)  # pointerup -> sync button clicked, ms
    sync_to_counts: list[float] = field(default_factory=list)
    timeouts: int = 0
    perf: list[dict] = field(default_factory=list)
    stale_note: str = ""
    note: str = ""


def resource(timeline: dict, fragment: str) -> dict | None:
    found = [entry for entry in timeline.get("resources", []) if fragment in entry["name"]]
    return found[0] if found else None


def describe_timeline(timeline: dict) -> str:
    """Where the page load went: DOMContentLoaded, the painter's module, the first queue call, the mesh, ready."""
    parts = []
    if timeline.get("dcl") is not None:
        parts.append(f"DOMContentLoaded {timeline['dcl']:.0f}")
    for label, fragment in (("painter.js", "/studio/static/painter.js"), ("three.module.js", "three.module"),
                            ("first queue/join", "queue/join")):
        entry = resource(timeline, fragment)
        if entry:
            parts.append(f"{label} {entry['start']:.0f}-{entry['end']:.0f}")
    mesh = resource(timeline, "/studio/mesh/")
    if mesh:
        parts.append(f"mesh JSON {mesh['start']:.0f}-{mesh['end']:.0f} ({mesh['body'] / 1024:.0f} KiB)")
    if timeline.get("ready") is not None:
        parts.append(f"ready {timeline['ready']:.0f}")
    resources = timeline.get("resources", [])
    total = sum(entry["bytes"] or 0 for entry in resources) / 1024
    return "ms since navigation: " + ", ".join(parts) + f"; {len(resources)} requests, {total:.0f} KiB transferred"


def load_page(browser, url: str, worker: str) -> tuple[object, object, LoadSample]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.add_init_script(READY_INIT_JS)
    started = time.perf_counter()
    page.goto(f"{url}/annotate/?worker={worker}")
    page.wait_for_selector('#studio-painter[data-ready="1"]', state="visible", timeout=120_000)
    wall = (time.perf_counter() - started) * 1000
    timeline = page.evaluate(TIMELINE_JS)
    return context, page, LoadSample(wall, timeline.get("ready"), timeline)


def chest_candidates(mesh: dict, how_many: int = 12) -> list[int]:
    """Front-facing chest vertices nearest the chest's centre (the painter opens on a front view along -Z)."""
    import numpy as np

    vertices = np.asarray(mesh["vertices"], dtype=np.float64).reshape(-1, 3)
    parts = np.asarray(mesh["part_labels"])
    front = vertices[:, 2] > np.median(vertices[:, 2])
    names = list(mesh["part_names"])
    part = names.index("chest") if "chest" in names else names.index("abdomen") if "abdomen" in names else None
    chosen = np.flatnonzero(front & (parts == part)) if part is not None else np.flatnonzero(front)
    centre = vertices[chosen].mean(0)
    order = np.argsort(np.linalg.norm(vertices[chosen, :2] - centre[:2], axis=1))
    return [int(i) for i in chosen[order[:how_many]]]


def pick_point(page, candidates: list[int]) -> tuple[float, float] | None:
    for vertex in candidates:
        position = page.evaluate("(id) => window.studioPainter.screenPosition(id)", vertex)
        inside = 40 < position["x"] < VIEWPORT["width"] - 40 and 10 < position["y"] < VIEWPORT["height"] - 10
        if position["visible"] and inside:
            return position["x"], position["y"]
    return None


def drag(page, x: float, y: float, half: float, steps: int = 10) -> None:
    page.mouse.move(x - half, y)
    page.mouse.down()
    page.mouse.move(x + half, y, steps=steps)
    page.mouse.up()


def measure_round_trips(page, point, strokes: int, warmups: int, result: BrowserResult) -> None:
    x, y = point
    for index in range(warmups + strokes):
        page.evaluate("(mode) => window.studioPainter.setMode(mode)", "paint" if index % 2 == 0 else "erase")
        page.evaluate(ARM_JS)
        drag(page, x, y, half=30)
        try:
            page.wait_for_function("() => window.__rt && window.__rt.changed !== null", timeout=15_000)
        except Exception:  # the playwright TimeoutError: no change of the server's counts within 15 s
            result.timeouts += 1
            continue
        rt = page.evaluate("() => window.__rt")
        if index >= warmups:
            result.round_trips.append(rt["changed"] - rt["up"])
            if rt["sync"] is not None:
                result.to_sync.append(rt["sync"] - rt["up"])
                result.sync_to_counts.append(rt["changed"] - rt["sync"])
            result.perf.append(page.evaluate("() => window.studioPainter.state().perf"))
        page.wait_for_timeout(150)  # let the finished event clear before the next stroke


LOG_JS = """() => {
  const log = { ups: [], syncs: [], changes: [] };
  window.__log = log;
  window.addEventListener('pointerup', () => log.ups.push(performance.now()), true);
  document.addEventListener('click', (event) => {
    if (event.target.closest && event.target.closest('#painter-sync')) log.syncs.push(performance.now());
  }, true);
  let previous = (document.getElementById('painter-server-counts') || {}).textContent || '';
  new MutationObserver(() => {
    const el = document.getElementById('painter-server-counts');
    const text = el ? el.textContent : '';
    if (text !== previous) { previous = text; log.changes.push(performance.now()); }
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
}"""


# Two strokes 40 ms apart, as synthetic pointer events in one go (Playwright's mouse is slower than a hand here).
DOUBLE_STROKE_JS = """async ([x, y, half]) => {
  const canvas = document.querySelector('#studio-painter canvas');
  const fire = (type, px, py) => canvas.dispatchEvent(new PointerEvent(type, {
    clientX: px, clientY: py, button: 0, buttons: type === 'pointerup' ? 0 : 1, pointerId: 7, pointerType: 'mouse',
    isPrimary: true, bubbles: true, cancelable: true }));
  const stroke = (dy) => {
    fire('pointerdown', x - half, y + dy);
    for (let k = 1; k <= 6; k++) fire('pointermove', x - half + (2 * half * k) / 6, y + dy);
    fire('pointerup', x + half, y + dy);
  };
  stroke(-45);
  await new Promise((resolve) => setTimeout(resolve, 40));
  stroke(45);
}"""


def quick_double_stroke(page, point) -> str:
    """Two strokes 40 ms apart: does the server's check end up at the painter's final counts?

    The painter clicks the hidden sync button after each stroke; the second click comes while the
    first check is still pending, and Gradio's default trigger_mode for a click ("once") may drop it,
    which would leave the server's counts stale until the next stroke.
    """
    x, y = point
    page.evaluate("() => window.studioPainter.setMode('paint')")
    page.evaluate(LOG_JS)
    page.evaluate(DOUBLE_STROKE_JS, [x, y, 30])
    page.wait_for_timeout(3000)
    local = page.evaluate("() => window.studioPainter.state().counts")
    log = page.evaluate("() => window.__log")
    text = page.inner_text("#painter-server-counts")
    server = {label.strip(): int(count) for label, count in SERVER_COUNTS.findall(text)}
    ups, changes = log["ups"], log["changes"]
    timing = (f"strokes ended {ups[1] - ups[0]:.0f} ms apart, first answer {changes[0] - ups[0]:.0f} ms after the "
              f"first stroke; {len(log['syncs'])} sync clicks, {len(changes)} server updates"
              if len(ups) >= 2 and changes else f"log {log}")
    if server == local:
        return f"match {local} ({timing})"
    return f"STALE: server's check {server}, painter {local} ({timing})"


def print_round_trips(result: BrowserResult, label: str) -> None:
    rts = result.round_trips
    print(f"  paint -> server round trip, {label} ({len(rts)} strokes, in-page performance.now()): "
          f"median {statistics.median(rts) if rts else float('nan'):.0f} ms, p95 {percentile(rts, 95):.0f} ms, "
          f"max {percentile(rts, 100):.0f} ms; no change within 15 s: {result.timeouts}")
    if result.to_sync:
        print(f"    of which pointerup -> sync click (stroke end, render, painter-change) median "
              f"{statistics.median(result.to_sync):.1f} ms; sync click -> counts shown (READ_JS, queue, server check, "
              f"update) median {statistics.median(result.sync_to_counts):.0f} ms")
    if result.perf:
        print("    painter state().perf, median over the strokes: " + ", ".join(
            f"{key} {statistics.median(p[key] for p in result.perf):.1f} ms" for key in sorted(result.perf[0])))


def run_browser(browser, url: str, studio, args, run_id: str) -> tuple[BrowserResult, object, tuple | None]:
    """Page loads and round trips. Returns the stroke page (still open, for strokes during the load) and its point."""
    result = BrowserResult()
    print(f"\n[browser] Chromium {CHROMIUM} (software WebGL), viewport {VIEWPORT['width']}x{VIEWPORT['height']}")
    context, _, result.cold = load_page(browser, url, f"page-{run_id}-cold")
    context.close()
    print(f"  cold load (fresh server and browser): {result.cold.wall_ms:.0f} ms to an interactive painter "
          f"(in the page: {result.cold.ready_ms:.0f} ms)")
    print(f"    {describe_timeline(result.cold.timeline)}")
    for index in range(args.contexts):
        context, _, sample = load_page(browser, url, f"page-{run_id}-{index}")
        context.close()
        result.warm.append(sample)
        print(f"  load {index + 1}/{args.contexts} (fresh context): {sample.wall_ms:.0f} ms "
              f"(in the page: {sample.ready_ms:.0f} ms)")
    if result.warm:
        print(f"    last: {describe_timeline(result.warm[-1].timeline)}")

    _, page, _ = load_page(browser, url, f"page-{run_id}-strokes")
    point = pick_point(page, chest_candidates(studio.body_mesh_json(TOPOLOGY)))
    if point is None:
        result.note = "no visible chest vertex on screen: round trip not measured"
        print(f"  {result.note}")
        return result, None, None
    measure_round_trips(page, point, args.strokes, warmups=2, result=result)
    print_round_trips(result, "idle server, after 2 warm-ups")
    result.stale_note = quick_double_stroke(page, point)
    print(f"  two quick strokes, server's check 3 s later vs the painter: {result.stale_note}")
    return result, page, point


# ---- 2. the load --------------------------------------------------------------------------------------------
def parse_task(outputs) -> dict | None:
    """The next task from an /annotate event's outputs (image, text, progress, payload, status)."""
    payload = outputs[3]
    if not payload:
        return None
    data = json.loads(payload)
    return {"task_id": data["task_id"], "topology": data["topology"], "labels": list(data["labels"])}


def annotator_thread(url: str, worker: str, seed: int, barrier: threading.Barrier,
                     deadline_box: list, out: dict) -> None:
    """One annotator: a Client (one browser session), start_session, then submit until the deadline."""
    import numpy as np
    from gradio_client import Client

    from engine.body.topology import num_vertices

    rng = np.random.default_rng(seed)
    task = None
    try:
        client = Client(url + "/annotate/", verbose=False, download_files=False)
        started = time.perf_counter()
        task = parse_task(client.predict(worker, api_name="/start_session"))
        out["start_s"].append(time.perf_counter() - started)
    except Exception as error:
        out["errors"].append(f"setup: {describe_error(error)}")
        client = None
    barrier.wait()
    if client is None:
        return
    deadline = deadline_box[0]
    while task is not None and time.monotonic() < deadline:
        count = num_vertices(task["topology"])
        layers = {label: np.sort(rng.choice(count, IDS_PER_LABEL, replace=False)).tolist() for label in task["labels"]}
        painted = json.dumps({"task": task["task_id"], "topology": task["topology"], "layers": layers,
                              "seconds": float(rng.uniform(5, 60))})
        started = time.perf_counter()
        try:
            outputs = client.predict(painted, api_name="/submit")
        except Exception as error:  # an AppError (gr.Error) or a transport error: count it, resynchronise
            out["errors"].append(describe_error(error))
            try:
                task = parse_task(client.predict(worker, api_name="/start_session"))
            except Exception as again:
                out["errors"].append(f"resync: {describe_error(again)}")
                return
            continue
        out["submit_s"].append(time.perf_counter() - started)
        status = str(outputs[4])
        match = re.match(r"Submitted task (\d+)", status)
        if match and "already stored" not in status:
            out["acked"].append((worker, int(match.group(1))))
        elif match:
            out["repeat_receipts"] += 1
        else:
            out["errors"].append(f"unexpected status {status[:100]!r}")
        task = parse_task(outputs)
    if task is None:
        out["ran_dry"] += 1


def run_annotators(url: str, annotators: int, seconds: float, seed: int, tag: str, window_event=None) -> dict:
    """In the child process: ``annotators`` threads; returns latencies, acknowledgements and errors.

    ``window_event`` (a multiprocessing Event) is set when the timed window starts, after every client
    has connected and received its first task.
    """
    import resource

    out = {"start_s": [], "submit_s": [], "acked": [], "errors": [], "repeat_receipts": 0, "ran_dry": 0}
    barrier = threading.Barrier(annotators + 1, timeout=600)
    deadline_box = [float("inf")]
    threads = [threading.Thread(target=annotator_thread, daemon=True, name=f"annotator-{i}",
                                args=(url, f"{tag}-{i:03d}", seed * 1000 + i, barrier, deadline_box, out))
               for i in range(annotators)]
    setup_started = time.perf_counter()
    for thread in threads:
        thread.start()
    # every thread has its client and its first task: set the deadline, then release them together
    while barrier.n_waiting < annotators and any(t.is_alive() for t in threads):
        time.sleep(0.01)
    setup = time.perf_counter() - setup_started
    deadline_box[0] = time.monotonic() + seconds
    cpu_before = time.process_time()
    window_start = time.time()
    if window_event is not None:
        window_event.set()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    out["wall_s"] = time.perf_counter() - started
    out["window"] = (window_start, time.time())
    out["setup_s"] = setup
    out["client_cpu_s"] = time.process_time() - cpu_before
    out["client_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def annotators_process(queue, window_event, url: str, annotators: int, seconds: float, seed: int, tag: str) -> None:
    """The child process's entry point: the result (or why it failed) goes back through ``queue``."""
    try:
        queue.put(("ok", run_annotators(url, annotators, seconds, seed, tag, window_event)))
    except BaseException as error:  # noqa: BLE001 - reported by the parent
        queue.put(("error", describe_error(error)))


class CpuSampler(threading.Thread):
    """This process's CPU seconds, sampled twice a second (the server's share of the machine during the window)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            self.samples.append((time.time(), time.process_time()))
            self._halt.wait(0.5)

    def stop(self):
        self._halt.set()
        self.join()

    def between(self, start: float, end: float) -> float:
        inside = [cpu for t, cpu in self.samples if start <= t <= end]
        return inside[-1] - inside[0] if len(inside) >= 2 else float("nan")


class StageTimer:
    """Wraps module attributes with timing wrappers (``--profile``); ``restore`` puts the originals back.

    Each call records its wall time and, for code that runs on one thread, that thread's CPU time: the
    difference is time spent waiting (for a lock, the GIL, the disk).
    """

    def __init__(self):
        self.calls: dict[str, list[tuple[float, float, float | None]]] = collections.defaultdict(list)
        self._patched: list[tuple[object, str, object]] = []
        self._lock = threading.Lock()

    def _add(self, name: str, wall: float, cpu: float | None) -> None:
        with self._lock:
            self.calls[name].append((time.time(), wall, cpu))  # (end time, wall s, CPU s)

    def in_window(self, name_part: str, window: tuple[float, float]) -> list[float]:
        return [wall for name, values in self.calls.items() if name_part in name
                for end, wall, _ in values if window[0] <= end <= window[1]]

    def patch(self, owner, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self._add(name, time.perf_counter() - started, time.thread_time() - cpu)

        self._patched.append((owner, attribute, original))
        setattr(owner, attribute, timed)

    def patch_process_api(self, blocks_class) -> None:
        original = blocks_class.process_api

        @functools.wraps(original)
        async def timed(blocks, block_fn, *args, **kwargs):
            started = time.perf_counter()
            try:
                return await original(blocks, block_fn, *args, **kwargs)
            finally:
                fn_name = getattr(block_fn, "name", None) or str(block_fn)
                self._add(f"gradio process_api [{fn_name}] (thread wait + handler + pre/postprocess)",
                          time.perf_counter() - started, None)

        self._patched.append((blocks_class, "process_api", original))
        blocks_class.process_api = timed

    def patch_store_sessions(self, store_class) -> None:
        """``Store.session``: how long a write session waits for the SQLite write lock, and holds it."""
        original = store_class.session
        timer = self

        @contextlib.contextmanager
        def session(store, write: bool = False):
            asked = time.perf_counter()
            inner = original(store, write)
            opened = inner.__enter__()  # the write lock (SQLite) is taken here
            got, cpu = time.perf_counter(), time.thread_time()
            try:
                yield opened
            except BaseException:
                if not inner.__exit__(*sys.exc_info()):
                    raise
            else:
                inner.__exit__(None, None, None)  # commit, then the lock is released
            finally:
                kind = "write" if write else "read"
                timer._add(f"store {kind} session: wait to open (the write lock)", got - asked, None)
                timer._add(f"store {kind} session: open (statements + commit)", time.perf_counter() - got,
                           time.thread_time() - cpu)

        self._patched.append((store_class, "session", original))
        store_class.session = session

    def restore(self) -> None:
        for owner, attribute, original in reversed(self._patched):
            setattr(owner, attribute, original)
        self._patched.clear()

    def print_table(self, window: tuple[float, float]) -> None:
        span = window[1] - window[0]
        rows = [(name, [(wall, cpu) for end, wall, cpu in values if window[0] <= end <= window[1]])
                for name, values in self.calls.items()]
        rows = sorted((row for row in rows if row[1]), key=lambda row: -sum(wall for wall, _ in row[1]))
        if not rows:
            print("  server-side stages: nothing recorded in the window")
            return
        width = max(len(name) for name, _ in rows)
        print(f"  server-side stages in the {span:.0f} s window (timing wrappers; busy = summed wall / window, "
              "> 1 when calls overlap; cpu = the calling thread's CPU time):")
        print(f"    {'stage':<{width}}  {'calls':>6}  {'p50 ms':>7}  {'p95 ms':>7}  {'mean ms':>7}  "
              f"{'cpu ms':>7}  {'busy':>6}")
        for name, values in rows:
            ms = [wall * 1000 for wall, _ in values]
            cpus = [cpu * 1000 for _, cpu in values if cpu is not None]
            cpu_text = f"{statistics.fmean(cpus):>7.1f}" if cpus else f"{'-':>7}"
            print(f"    {name:<{width}}  {len(ms):>6}  {percentile(ms, 50):>7.1f}  {percentile(ms, 95):>7.1f}  "
                  f"{statistics.fmean(ms):>7.1f}  {cpu_text}  {sum(ms) / 1000 / span:>6.2f}")


class Sampler(threading.Thread):
    """A wall-clock sampling profiler of this process's threads (``--profile``): where busy threads are.

    Threads are grouped into the event loop (uvicorn, Gradio's queue, SSE) and the others (the worker
    threads that run handlers, pre- and postprocessing). A thread parked in select / a condition wait
    is idle; a thread waiting for the GIL or a lock counts as busy where it waits.
    """

    IDLE = {"select", "wait", "_wait_for_tstate_lock", "poll", "sleep", "accept", "_worker"}
    LOOP_MARK = "asyncio/base_events.py:_run_once"

    def __init__(self, gate, interval_s: float = 0.004):
        super().__init__(daemon=True)
        self.gate = gate  # sampling starts when this event is set (the load window)
        self.interval_s = interval_s
        self.ticks = 0
        self.busy: collections.Counter = collections.Counter()  # group -> busy samples
        self.leaf: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.inclusive: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self._halt = threading.Event()

    @staticmethod
    def where(frame) -> str:
        path = frame.f_code.co_filename
        for marker in ("site-packages/", str(REPO_ROOT) + "/", "/lib/python3"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        return f"{path}:{frame.f_code.co_name}"

    def run(self):
        own = threading.get_ident()
        while not self.gate.wait(0.05):
            if self._halt.is_set():
                return
        while not self._halt.wait(self.interval_s):
            self.ticks += 1
            for thread_id, frame in sys._current_frames().items():
                if thread_id == own or frame.f_code.co_name in self.IDLE:
                    continue
                leaf = self.where(frame)
                stack = set()
                while frame is not None:
                    stack.add(self.where(frame))
                    frame = frame.f_back
                group = "event loop" if any(name.endswith(self.LOOP_MARK) for name in stack) else "worker threads"
                self.busy[group] += 1
                self.leaf[group][leaf] += 1
                self.inclusive[group].update(stack)

    def stop(self):
        self._halt.set()
        self.join()

    def print_report(self, top: int = 14) -> None:
        if not self.ticks:
            print("  sampling profiler: no samples")
            return
        boring = ("threading.py:", "anyio/_backends/_asyncio.py:run", "asyncio/events.py:_run", "asyncio/runners.py",
                  "asyncio/base_events.py:run_", "uvicorn/server.py", "uvicorn/main.py", "concurrent/futures/thread.py:",
                  "bench_studio.py:timed", "contextlib.py:", "gradio/utils.py:wrapper", "studio/context.py:wrapper",
                  "asyncio/base_events.py:_run_once")
        print(f"  sampling profiler, {self.ticks} ticks of {self.interval_s * 1000:.0f} ms: busy share of the window "
              + ", ".join(f"{group} {count / self.ticks:.2f} threads" for group, count in self.busy.most_common()))
        for group, count in self.busy.most_common():
            print(f"    {group}: inclusive (share of its busy samples with the function on the stack)")
            shown = 0
            for name, hits in self.inclusive[group].most_common():
                if any(b in name for b in boring):
                    continue
                print(f"      {hits / count:6.1%}  {name}")
                shown += 1
                if shown >= top:
                    break
            print(f"    {group}: leaf (where the thread was)")
            for name, hits in self.leaf[group].most_common(6):
                print(f"      {hits / count:6.1%}  {name}")


@dataclass
class LoadResult:
    annotators: int
    wall_s: float
    acknowledged: int
    rate: float
    submit_p50_ms: float
    submit_p95_ms: float
    submit_max_ms: float
    errors: int
    lost: int
    duplicated: int
    over_redundancy: int
    stored: int
    ran_dry: int


def verify(store, tag: str, acked: list[tuple[str, int]]) -> dict:
    """Compare the store with the acknowledgements of this run's annotators (external ids ``tag-NNN``)."""
    import sqlalchemy as sa

    from annotations import models

    subs, annotators, tasks = models.SubmissionRow, models.AnnotatorRow, models.TaskRow
    with store.session() as session:
        rows = session.execute(sa.select(subs.submission_key, subs.task_id, annotators.external_id)
                               .join(annotators, annotators.id == subs.annotator_id)
                               .where(annotators.external_id.like(f"{tag}-%"))).all()
        per_task = (sa.select(subs.task_id, sa.func.count().label("n")).group_by(subs.task_id).subquery())
        over = session.execute(sa.select(tasks.id, per_task.c.n, tasks.redundancy)
                               .join(per_task, per_task.c.task_id == tasks.id)
                               .where(~tasks.is_gold, per_task.c.n > tasks.redundancy)).all()
    pairs = [(worker, task_id) for _, task_id, worker in rows]
    stored_pairs, acked_pairs = set(pairs), set(acked)
    return {
        "stored": len(rows),
        "lost": len(acked_pairs - stored_pairs),
        "unacknowledged_stored": len(stored_pairs - acked_pairs),
        "duplicate_keys": len(rows) - len({key for key, _, _ in rows}),
        "duplicate_pairs": len(rows) - len(stored_pairs),
        "acked_twice": len(acked) - len(acked_pairs),
        "over": over,
    }


def run_load(url: str, studio, args, run_id: str, page=None, point=None) -> tuple[LoadResult, BrowserResult | None]:
    import multiprocessing

    tag = f"load-{run_id}"
    print(f"\n[load] {args.annotators} annotators (threads in a child process, one gradio_client.Client each) "
          f"looping submit -> next task for {args.seconds:g} s; {IDS_PER_LABEL} vertex ids per label; "
          f"store lane concurrency {studio.settings.store_concurrency}")
    timer = sampler = None
    if args.profile:
        import gradio as gr
        import gradio.blocks as gr_blocks

        import annotations.workflow as workflow_module
        import studio.annotate as annotate_module

        timer = StageTimer()
        timer.patch(workflow_module, "submit", "store: workflow.submit")
        timer.patch(workflow_module, "next_task", "store: workflow.next_task")
        timer.patch(annotate_module, "read_painting", "read_painting (parse + check ids)")
        timer.patch(annotate_module, "task_view", "task_view (prior + image + payload)")
        timer.patch(annotate_module, "pre_annotation", "  pre_annotation (category prior)")
        timer.patch(annotate_module, "payload_json", "  payload_json (painter JSON)")
        timer.patch(gr.Image, "postprocess", "gr.Image.postprocess (array -> webp in cache)")
        timer.patch_process_api(gr_blocks.Blocks)
        timer.patch_store_sessions(studio.store.__class__)
    cpu = CpuSampler()
    cpu.start()
    context = multiprocessing.get_context("spawn")
    queue, window_event = context.Queue(), context.Event()
    child = context.Process(target=annotators_process, daemon=True, name="bench-annotators",
                            args=(queue, window_event, url, args.annotators, args.seconds, args.seed, tag))
    if timer:
        sampler = Sampler(window_event)
        sampler.start()
    under_load = None
    try:
        child.start()
        if page is not None and window_event.wait(timeout=600):
            time.sleep(min(5.0, args.seconds / 4))  # into the steady state
            under_load = BrowserResult()
            measure_round_trips(page, point, args.strokes, warmups=0, result=under_load)
        status, out = queue.get(timeout=args.seconds + 1200)
        child.join(timeout=60)
    finally:
        if sampler:
            sampler.stop()
        if timer:
            timer.restore()
        cpu.stop()
        if child.is_alive():
            child.terminate()
    if status != "ok":
        raise RuntimeError(f"the annotators' process failed: {out}")

    acked = out["acked"]
    submit_ms = [s * 1000 for s in out["submit_s"]]
    start_ms = [s * 1000 for s in out["start_s"]]
    wall = out["wall_s"]
    rate = len(acked) / wall if wall > 0 else float("nan")
    server_cpu = cpu.between(*out["window"])
    print(f"  setup ({args.annotators} clients, /start_session each): {out['setup_s']:.1f} s; start_session p50 "
          f"{percentile(start_ms, 50):.0f} ms, max {percentile(start_ms, 100):.0f} ms")
    print(f"  window {wall:.1f} s: {len(acked)} acknowledged submissions -> {rate:.1f} submissions/s")
    print(f"  submit (stores it and returns the next task): {len(submit_ms)} calls, "
          f"p50 {percentile(submit_ms, 50):.0f} ms, "
          f"p95 {percentile(submit_ms, 95):.0f} ms, p99 {percentile(submit_ms, 99):.0f} ms, "
          f"max {percentile(submit_ms, 100):.0f} ms")
    print(f"  CPU in the window: server process {server_cpu:.1f} s ({server_cpu / wall:.2f} cores), load generator "
          f"{out['client_cpu_s']:.1f} s ({out['client_cpu_s'] / wall:.2f} cores) of {os.cpu_count()} cores; "
          f"load generator peak RSS {out['client_peak_rss_mib']:.0f} MiB")
    if acked:
        print(f"  server CPU per acknowledged submission (submit + next task + page update): "
              f"{server_cpu / len(acked) * 1000:.1f} ms -> at most ~{len(acked) / server_cpu:.0f} submissions/s "
              "for one server process (one interpreter lock) with a whole core")
    errors = out["errors"]
    print(f"  errors: {len(errors)}; repeat receipts: {out['repeat_receipts']}; annotators that ran out of tasks: "
          f"{out['ran_dry']}")
    for message, count in collections.Counter(errors).most_common(5):
        print(f"    error ({count}x): {message}")

    checks = verify(studio.store, tag, acked)
    duplicated = checks["duplicate_keys"] + checks["duplicate_pairs"] + checks["acked_twice"]
    lost = checks["lost"]
    print(f"  database: {checks['stored']} submissions stored by this run's annotators, {len(acked)} acknowledged "
          f"({'equal' if checks['stored'] == len(acked) else 'DIFFERENT'}); stored but never acknowledged: "
          f"{checks['unacknowledged_stored']}")
    print(f"    submission key twice: {checks['duplicate_keys']}; "
          f"(task, annotator) twice: {checks['duplicate_pairs']}; "
          f"acknowledged twice: {checks['acked_twice']}; tasks above their redundancy: {len(checks['over'])}"
          + (f" (e.g. task {checks['over'][0][0]}: {checks['over'][0][1]} > {checks['over'][0][2]})"
             if checks["over"] else ""))
    print(f"  lost: {lost}, duplicated: {duplicated}")
    if timer:
        handler = [v * 1000 for v in timer.in_window("[on_submit]", out["window"])]
        if handler:
            outside = percentile(submit_ms, 50) - percentile(handler, 50)
            print(f"  submit as the client sees it, p50 {percentile(submit_ms, 50):.0f} ms; "
                  "server process_api[on_submit] "
                  f"p50 {percentile(handler, 50):.0f} ms: the rest ({outside:.0f} ms at p50) is the queue wait, "
                  "SSE transport and the client")
        timer.print_table(out["window"])
    if sampler:
        sampler.print_report()
    if under_load is not None:
        print_round_trips(under_load, f"while the {args.annotators} annotators submit")
    return under_load, LoadResult(args.annotators, wall, len(acked), rate, percentile(submit_ms, 50),
                                  percentile(submit_ms, 95), percentile(submit_ms, 100), len(errors), lost, duplicated,
                                  len(checks["over"]), checks["stored"], out["ran_dry"])


# ---- summary ------------------------------------------------------------------------------------------------
def summary_rows(browser: BrowserResult | None, load: LoadResult | None, under_load: BrowserResult | None,
                 args) -> list[tuple]:
    rows = []

    def row(name, value, unit, target, direction="<=", fmt="{:.0f}"):
        if value is None or value != value:
            rows.append((name, "n/a", f"{direction} {fmt.format(target)}{unit}" if target else "-", "-", ""))
            return
        if target is None:
            rows.append((name, fmt.format(value) + unit, "-", "-", ""))
            return
        met = value <= target if direction == "<=" else value >= target
        ratio = f"{value / target:.2f}" if target else "-"
        rows.append((name, fmt.format(value) + unit, f"{direction} {fmt.format(target)}{unit}", ratio,
                     "yes" if met else "NO"))

    if browser is not None:
        if browser.cold:
            row("page load -> interactive painter, cold (first)", browser.cold.wall_ms, " ms", PAGE_LOAD_TARGET_MS)
        if browser.warm:
            walls = [s.wall_ms for s in browser.warm]
            row(f"page load, median of {len(walls)} fresh contexts", statistics.median(walls), " ms",
                PAGE_LOAD_TARGET_MS)
            row(f"page load, max of {len(walls)} fresh contexts", max(walls), " ms", PAGE_LOAD_TARGET_MS)
        if browser.round_trips:
            rts = browser.round_trips
            row(f"paint -> server round trip, median of {len(rts)}", statistics.median(rts), " ms",
                ROUND_TRIP_TARGET_MS)
            row(f"paint -> server round trip, p95 of {len(rts)}", percentile(rts, 95), " ms", ROUND_TRIP_TARGET_MS)
        elif browser.note:
            rows.append(("browser figures", browser.note, "-", "-", ""))
    if under_load is not None and under_load.round_trips:
        rts = under_load.round_trips
        row(f"round trip during the load, median of {len(rts)}", statistics.median(rts), " ms", ROUND_TRIP_TARGET_MS)
        row(f"round trip during the load, p95 of {len(rts)}", percentile(rts, 95), " ms", ROUND_TRIP_TARGET_MS)
    if load is not None:
        rows.append((f"submissions/s, {load.annotators} annotators (baseline: store-only target)",
                     f"{load.rate:.1f}", f">= {STORE_TARGET_PER_S:.0f}", f"{load.rate / STORE_TARGET_PER_S:.2f}",
                     "yes" if load.rate >= STORE_TARGET_PER_S else "NO"))
        rows.append((f"submit p50 / max ({load.acknowledged} acknowledged in {load.wall_s:.0f} s)",
                     f"{load.submit_p50_ms:.0f} / {load.submit_max_ms:.0f} ms", "-", "-", ""))
        row("submit p95 (reference: the round-trip target)", load.submit_p95_ms, " ms", ROUND_TRIP_TARGET_MS)
        rows.append(("errors", str(load.errors), "0", "-", "yes" if load.errors == 0 else "NO"))
        rows.append(("lost / duplicated / tasks over redundancy",
                     f"{load.lost} / {load.duplicated} / {load.over_redundancy}", "0 / 0 / 0", "-",
                     "yes" if not (load.lost or load.duplicated or load.over_redundancy) else "NO"))
    return rows


def print_summary(rows: list[tuple], seconds: float) -> None:
    header = ("figure", "measured", "target", "ratio", "met")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print(f"\nsummary (total run {seconds:.0f} s; 1-minute load average now {os.getloadavg()[0]:.2f}; "
          "ratio = measured / target)")
    for r in [header, tuple("-" * w for w in widths)] + rows:
        print("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(r, widths)))


# ---- main ---------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, default=32, help="simulated annotators (default 32)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load window (default 60)")
    parser.add_argument("--tasks", type=int, default=3000, help="tasks made before the run (default 3000)")
    parser.add_argument("--redundancy", type=int, default=3, help="annotators per task (default 3)")
    parser.add_argument("--contexts", type=int, default=5, help="fresh browser contexts after the cold load")
    parser.add_argument("--strokes", type=int, default=20, help="timed paint strokes (default 20)")
    parser.add_argument("--db", default=None, help="store URL (default: file SQLite in a temporary folder)")
    parser.add_argument("--store-concurrency", type=int, default=None,
                        help="StudioSettings.store_concurrency (default: the settings' default)")
    parser.add_argument("--profile", action="store_true",
                        help="time the server-side stages of each event and sample the server's threads "
                             "during the load")
    parser.add_argument("--skip", action="append", default=[], choices=("browser", "load", "strokes-under-load"),
                        help="leave out a part; strokes-under-load: no browser strokes during the load window")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # Everything this writes (store, images, Gradio's file cache) goes into one folder, deleted at exit.
    workdir = Path(tempfile.mkdtemp(prefix="bench_studio_"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    os.environ["STUDIO_VAR"] = str(workdir / "var")
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio-cache")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    from app import build_studio
    from studio.server import BackgroundServer
    from studio.settings import StudioSettings

    run_id = uuid.uuid4().hex[:8]
    models = workdir / "models"  # empty: the open body and the category prior, no licensed file
    models.mkdir()
    db_url = args.db or f"sqlite:///{workdir / 'store.db'}"
    extra = {"store_concurrency": args.store_concurrency} if args.store_concurrency else {}
    # Every simulated annotator comes from 127.0.0.1: the per-address limit on session starts would
    # measure itself, not the studio (docs/SECURITY.md; a real crowd arrives from many addresses).
    extra["session_starts_per_minute"] = 100_000
    settings = StudioSettings(models_dir=models, db_url=db_url, data_dir=workdir / "data", device="cpu", **extra)
    print(f"machine: {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}; 1-minute load average "
          f"{os.getloadavg()[0]:.2f}; store {db_url.split('@')[-1]}; work folder {workdir} (deleted at exit)")

    started_all = time.perf_counter()
    from engine.body.model import load_open_body_data

    started = time.perf_counter()
    load_open_body_data()  # a restarted server finds it on disk; the first one ever generates it
    print(f"open body generated into var/cache/body in {time.perf_counter() - started:.1f} s (once per install, "
          "before the server starts: the cold load below is a fresh server with that cache on disk)")
    studio = build_studio(settings)
    started = time.perf_counter()
    first, last = make_tasks(studio.store, args.tasks, args.redundancy, args.seed)
    print(f"tasks: {args.tasks} ({first}..{last}) on {TOPOLOGY}, labels {list(LABELS)}, redundancy {args.redundancy}, "
          f"made with add_task in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    server = BackgroundServer(studio)
    print(f"server: {server.url} started in {time.perf_counter() - started:.1f} s")

    browser_result = load = under_load = None
    stroke_page = point = None
    try:
        with contextlib.ExitStack() as stack:
            if "browser" not in args.skip:
                if CHROMIUM.exists():
                    from playwright.sync_api import sync_playwright

                    playwright = stack.enter_context(sync_playwright())
                    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                    stack.callback(browser.close)
                    browser_result, stroke_page, point = run_browser(browser, server.url, studio, args, run_id)
                else:
                    browser_result = BrowserResult(note=f"skipped: {CHROMIUM} is missing")
                    print(f"\n[browser] {browser_result.note}")
            if "load" not in args.skip:
                if "strokes-under-load" in args.skip:
                    stroke_page = point = None
                under_load, load = run_load(server.url, studio, args, run_id, stroke_page, point)
    finally:
        server.stop()
    print_summary(summary_rows(browser_result, load, under_load, args), time.perf_counter() - started_all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
