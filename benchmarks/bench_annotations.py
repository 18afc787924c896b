"""Benchmark: the annotation store under concurrent writers, and the training-data export at scale.

    python benchmarks/bench_annotations.py [--writers 16] [--per-writer 300] [--tasks 1000]
                                           [--export-tasks 20000] [--profile-export] [--skip ...]
                                           [--no-analyze]

Targets (issue figures, on this 2-core machine):
- (a) file SQLite: >= 500 next_task + submit pairs/s sustained with 16 writer threads, each looping
  ``workflow.next_task`` -> ``workflow.submit`` with ~300 vertex ids per label.
- (b) the same workload on PostgreSQL when ``$STUDIO_TEST_PG_URL`` is set (``.ci/start-postgres``
  prints one). The schema ``public`` of that database is DROPPED and recreated first: never point it
  at a database whose contents matter. The tables are ANALYZEd after the import (``--no-analyze``: not),
  and the CPU of the server's processes per pair is printed when the server runs on this machine.
- (c) ``export_training_data`` of 100k submissions (20k tasks x redundancy 5, 6890-vertex topology)
  in <= 20 s. The rows are bulk-inserted with SQLAlchemy Core (the workflow API would take too long);
  that populate step is timed separately and is not part of the target.

Prints figures only; nothing here asserts. After each workload the database is checked (acknowledged
submissions all stored, no task over its redundancy) and OK / FAIL is printed.
"""
from __future__ import annotations

import argparse
import atexit
import cProfile
import gc
import hashlib
import io
import json
import os
import pstats
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Keep the store, caches and every file this writes out of var/: a private folder, deleted at exit.
os.environ["STUDIO_VAR"] = tempfile.mkdtemp(prefix="bench_annotations_")
atexit.register(shutil.rmtree, os.environ["STUDIO_VAR"], ignore_errors=True)

import numpy as np  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from PIL import Image  # noqa: E402

from annotations import codec, models, workflow  # noqa: E402
from annotations.batch import BatchDefaults, import_batch  # noqa: E402
from annotations.export import ExportFilters, export_training_data  # noqa: E402
from annotations.store import Store, reset_postgres_schema  # noqa: E402

TOPOLOGY = "smplh-6890"
VERTICES = 6890
LABELS = ("chair", "supporting")
REDUNDANCY = 5
IDS_PER_LABEL = 300
IMAGE_SIDE = 32

SUBMIT_TARGET_PER_S = 500.0
EXPORT_TARGET_S = 20.0
EXPORT_SUBMISSIONS = 100_000


# ---- helpers -------------------------------------------------------------------------------------------
def tiny_png(rng: np.random.Generator) -> bytes:
    """A 32x32 RGB PNG of random pixels: distinct content (and sha256) for every call."""
    pixels = rng.integers(0, 256, size=(IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, q)) if samples else float("nan")


def rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def postgres_cpu_seconds() -> float | None:
    """CPU seconds used so far by this machine's PostgreSQL server processes (the postmaster's count of its
    exited children included), from /proc; None where that cannot be read (no /proc, a remote server)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    ticks, total, found = os.sysconf("SC_CLK_TCK"), 0, False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "comm").read_text().startswith("postgres"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
        found = True
    return total / ticks if found else None


def describe_error(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) < 300 else text[:297] + "..."


# ---- (a) and (b): concurrent writers ------------------------------------------------------------------
def make_batch_folder(folder: Path, tasks: int, seed: int) -> Path:
    """A batch folder: ``tasks`` tiny distinct PNGs and a tasks.jsonl with one human_contact task each."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(tasks):
        name = f"img_{index:05d}.png"
        (folder / name).write_bytes(tiny_png(rng))
        lines.append(json.dumps({"image": name, "kind": "human_contact", "topology": TOPOLOGY,
                                 "labels": list(LABELS), "redundancy": REDUNDANCY}))
    (folder / "tasks.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@dataclass
class WriterResult:
    acknowledged: int = 0
    duplicates: int = 0
    ran_dry: bool = False
    next_seconds: list[float] = field(default_factory=list)
    submit_seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class WorkloadResult:
    backend: str
    wall_s: float
    acknowledged: int
    submissions_per_s: float
    next_p50_ms: float
    next_p95_ms: float
    submit_p50_ms: float
    submit_p95_ms: float
    errors: int
    checks_ok: bool


def writer_loop(store: Store, annotator_id: int, payloads: list[dict], barrier: threading.Barrier,
                result: WriterResult, writer: int) -> None:
    barrier.wait()
    attempt = 0
    while result.acknowledged < len(payloads) and len(result.errors) < 20:
        attempt += 1
        try:
            started = time.perf_counter()
            assignment = workflow.next_task(store, annotator_id)
            result.next_seconds.append(time.perf_counter() - started)
            if assignment is None:
                result.ran_dry = True
                return
            payload = {label: payloads[result.acknowledged][label] for label in assignment.task.labels}
            key = f"bench-{writer:02d}-{attempt:05d}-{uuid.uuid4().hex}"
            started = time.perf_counter()
            receipt = workflow.submit(store, annotator_id, assignment.task.id, payload, key)
            result.submit_seconds.append(time.perf_counter() - started)
        except Exception as error:  # keep going: the figures should show errors, not hide them
            result.errors.append(describe_error(error))
            continue
        if receipt.duplicate:
            result.duplicates += 1
        else:
            result.acknowledged += 1


def run_workload(backend: str, url: str, batch_folder: Path, data_dir: Path, writers: int, per_writer: int,
                 seed: int, analyze: bool = True) -> WorkloadResult:
    print(f"\n[{backend}] {writers} writer threads x up to {per_writer} submissions, "
          f"{IDS_PER_LABEL} vertex ids per label, labels {list(LABELS)}")
    store = Store(url, data_dir=data_dir)
    try:
        started = time.perf_counter()
        report = import_batch(store, batch_folder, defaults=BatchDefaults(labels=LABELS, topology=TOPOLOGY,
                                                                         redundancy=REDUNDANCY))
        print(f"  import_batch: {report.num_tasks} tasks ({report.num_tasks * REDUNDANCY} slots) "
              f"in {time.perf_counter() - started:.2f} s")
        if backend == "postgresql" and analyze:
            # What autovacuum does within its naptime (1 min) of a bulk import. Without statistics the
            # planner takes `pool = 'crowd'` for rare and reads every open task per claim (a bitmap scan and
            # a sort) instead of the first few in index order; --no-analyze measures that first minute.
            with store.engine.begin() as connection:
                connection.exec_driver_sql("ANALYZE")
            print("  ANALYZE after the import (as autovacuum does within a minute; --no-analyze: without)")
        annotator_ids = [store.ensure_annotator(f"bench-writer-{i:02d}").id for i in range(writers)]
        payloads = []
        for writer in range(writers):
            rng = np.random.default_rng([seed, writer])
            payloads.append([{label: rng.choice(VERTICES, IDS_PER_LABEL, replace=False).tolist() for label in LABELS}
                             for _ in range(per_writer)])
        results = [WriterResult() for _ in range(writers)]
        barrier = threading.Barrier(writers + 1)
        threads = [threading.Thread(target=writer_loop, name=f"writer-{i}", daemon=True,
                                    args=(store, annotator_ids[i], payloads[i], barrier, results[i], i))
                   for i in range(writers)]
        for thread in threads:
            thread.start()
        server_cpu_started = postgres_cpu_seconds() if backend == "postgresql" else None
        barrier.wait()
        started, cpu_started = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        server_cpu_ended = postgres_cpu_seconds() if server_cpu_started is not None else None

        acknowledged = sum(r.acknowledged for r in results)
        next_all = [s for r in results for s in r.next_seconds]
        submit_all = [s for r in results for s in r.submit_seconds]
        errors = [e for r in results for e in r.errors]
        rate = acknowledged / wall if wall > 0 else float("nan")
        print(f"  wall time: {wall:.2f} s for {acknowledged} acknowledged submissions -> {rate:.0f} next_task+submit pairs/s "
              f"({rate / SUBMIT_TARGET_PER_S:.0%} of the {SUBMIT_TARGET_PER_S:.0f}/s target)")
        print(f"  next_task: {len(next_all)} calls, p50 {percentile_ms(next_all, 50):.1f} ms, "
              f"p95 {percentile_ms(next_all, 95):.1f} ms, max {percentile_ms(next_all, 100):.1f} ms")
        print(f"  submit:    {len(submit_all)} calls, p50 {percentile_ms(submit_all, 50):.1f} ms, "
              f"p95 {percentile_ms(submit_all, 95):.1f} ms, max {percentile_ms(submit_all, 100):.1f} ms")
        # This process's CPU (Python, SQLAlchemy, the driver, and SQLite's own work in-process): a figure
        # that does not depend on what else runs on the machine (the load average is printed too).
        print(f"  CPU of this process: {1000 * cpu / max(1, acknowledged):.2f} ms per pair "
              f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        if server_cpu_ended is not None:
            # Every PostgreSQL process on this machine (a server of other databases counts too): with this
            # process's CPU, the machine's CPU per pair, whatever else runs on it.
            print(f"  CPU of the PostgreSQL server processes on this machine: "
                  f"{1000 * (server_cpu_ended - server_cpu_started) / max(1, acknowledged):.2f} ms per pair")
        dry = sum(r.ran_dry for r in results)
        duplicates = sum(r.duplicates for r in results)
        print(f"  writers that ran out of tasks: {dry}; duplicate receipts: {duplicates}; errors: {len(errors)}")
        for message in sorted(set(errors))[:5]:
            print(f"    error ({errors.count(message)}x): {message}")
        checks_ok = verify_workload(store, acknowledged)
        return WorkloadResult(backend, wall, acknowledged, rate, percentile_ms(next_all, 50),
                              percentile_ms(next_all, 95), percentile_ms(submit_all, 50),
                              percentile_ms(submit_all, 95), len(errors), checks_ok)
    finally:
        store.close()


def verify_workload(store: Store, acknowledged: int) -> bool:
    """Check the database against what the writers were told; prints OK / FAIL per check."""
    tasks, subs, layers, assignments = (models.TaskRow.__table__, models.SubmissionRow.__table__,
                                        models.SubmissionLayerRow.__table__, models.AssignmentRow.__table__)
    with store.engine.connect() as connection:
        stored = connection.scalar(sa.select(sa.func.count()).select_from(subs))
        per_task = (sa.select(subs.c.task_id, sa.func.count().label("n")).group_by(subs.c.task_id).subquery())
        over = connection.execute(
            sa.select(tasks.c.id, per_task.c.n, tasks.c.redundancy)
            .join(per_task, per_task.c.task_id == tasks.c.id)
            .where(~tasks.c.is_gold, per_task.c.n > tasks.c.redundancy)).all()
        layer_count = connection.scalar(sa.select(sa.func.count()).select_from(layers))
        holding = (sa.select(assignments.c.task_id, sa.func.count().label("n"))
                   .where(assignments.c.status.in_(("assigned", "submitted")))
                   .group_by(assignments.c.task_id).subquery())
        filled_wrong = connection.scalar(
            sa.select(sa.func.count()).select_from(tasks.outerjoin(holding, holding.c.task_id == tasks.c.id))
            .where(tasks.c.filled != sa.func.coalesce(holding.c.n, 0)))
        pairs = connection.scalar(sa.select(sa.func.count()).select_from(
            sa.select(subs.c.task_id, subs.c.annotator_id).distinct().subquery()))
    checks = [
        (stored == acknowledged, f"submissions stored {stored} == acknowledged {acknowledged}"),
        (not over, f"no task above its redundancy ({len(over)} over"
                   + (f", e.g. task {over[0][0]}: {over[0][1]} > {over[0][2]})" if over else ")")),
        (layer_count == stored * len(LABELS), f"submission layers {layer_count} == {len(LABELS)} x submissions"),
        (pairs == stored, f"no annotator submitted a task twice ({stored - pairs} repeats)"),
        (filled_wrong == 0, f"tasks.filled matches open + submitted assignments ({filled_wrong} tasks differ)"),
    ]
    for ok, text in checks:
        print(f"  check {'OK  ' if ok else 'FAIL'} {text}")
    return all(ok for ok, _ in checks)


def populate_for_export(store: Store, num_tasks: int, redundancy: int, num_annotators: int, seed: int) -> dict:
    """Bulk-insert images (real files under the data dir), tasks, assignments, submissions and layers."""
    rng = np.random.default_rng(seed)
    now = datetime(2024, 1, 1)
    images_t, tasks_t = models.ImageRow.__table__, models.TaskRow.__table__
    annotators_t, assignments_t = models.AnnotatorRow.__table__, models.AssignmentRow.__table__
    subs_t, layers_t = models.SubmissionRow.__table__, models.SubmissionLayerRow.__table__
    chunk = 2000  # tasks per transaction: bounded memory, few commits
    layer_bytes = 0
    with store.engine.begin() as connection:
        connection.execute(annotators_t.insert(), [
            {"id": a, "external_id": f"bench-export-{a:04d}", "role": "annotator", "qualification": "qualified",
             "created_at": now} for a in range(1, num_annotators + 1)])
    submission_id = 0
    for first in range(0, num_tasks, chunk):
        image_rows, task_rows, assignment_rows, submission_rows, layer_rows = [], [], [], [], []
        for task_id in range(first + 1, min(first + chunk, num_tasks) + 1):
            data = tiny_png(rng)
            sha = hashlib.sha256(data).hexdigest()
            relative = f"images/{sha[:2]}/{sha}.png"
            path = store.data_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            image_rows.append({"id": task_id, "sha256": sha, "path": relative, "format": "png", "width": IMAGE_SIDE,
                               "height": IMAGE_SIDE, "num_bytes": len(data), "original_name": f"img_{task_id}.png",
                               "source": "bench", "licence": "CC0", "created_at": now})
            task_rows.append({"id": task_id, "image_id": task_id, "batch_id": None, "kind": "human_contact",
                              "topology": TOPOLOGY, "labels": list(LABELS), "object_id": None, "prediction_id": None,
                              "redundancy": redundancy, "priority": 0, "is_gold": False, "filled": redundancy,
                              "provenance": None, "created_at": now})
            # A "true" contact region per label; each annotator keeps ~90% of it and adds ~10% stray vertices.
            truth = {label: rng.choice(VERTICES, IDS_PER_LABEL, replace=False) for label in LABELS}
            for k in range(redundancy):
                submission_id += 1
                annotator_id = (task_id + k * (num_annotators // redundancy)) % num_annotators + 1
                assignment_rows.append({"id": submission_id, "task_id": task_id, "annotator_id": annotator_id,
                                        "status": "submitted", "flag_reason": None, "assigned_at": now,
                                        "finished_at": now + timedelta(seconds=40), "seconds_spent": 40.0})
                submission_rows.append({"id": submission_id, "submission_key": f"bench-export-{submission_id:08d}",
                                        "assignment_id": submission_id, "task_id": task_id,
                                        "annotator_id": annotator_id, "prediction_id": None, "seconds_spent": 40.0,
                                        "client_info": {}, "created_at": now})
                for label in LABELS:
                    kept = truth[label][rng.random(IDS_PER_LABEL) < 0.9]
                    stray = rng.integers(0, VERTICES, IDS_PER_LABEL // 10)
                    data_ids = codec.encode_ids(np.concatenate([kept, stray]))
                    layer_bytes += len(data_ids)
                    layer_rows.append({"submission_id": submission_id, "label": label, "encoding": "ids",
                                       "data": data_ids})
        with store.engine.begin() as connection:
            for table, rows in ((images_t, image_rows), (tasks_t, task_rows), (assignments_t, assignment_rows),
                                (subs_t, submission_rows), (layers_t, layer_rows)):
                connection.execute(table.insert(), rows)
    os.sync()  # flush the ~300 MiB just written, so that writeback does not run during the timed export
    return {"tasks": num_tasks, "submissions": submission_id, "layers": submission_id * len(LABELS),
            "layer_mib": layer_bytes / 2**20, "annotators": num_annotators}


@dataclass
class ExportResult:
    populate_s: float
    export_s: float
    submissions: int
    npz_bytes: int
    exported_tasks: int
    peak_rss_mib: float


def run_export(workdir: Path, num_tasks: int, seed: int, profile: bool) -> ExportResult:
    print(f"\n[export] {num_tasks} tasks x redundancy {REDUNDANCY} on {TOPOLOGY}, file SQLite")
    store = Store(f"sqlite:///{workdir / 'export.db'}", data_dir=workdir / "export-data")
    try:
        started = time.perf_counter()
        counts = populate_for_export(store, num_tasks, REDUNDANCY, num_annotators=200, seed=seed)
        populate = time.perf_counter() - started
        db_mib = (workdir / "export.db").stat().st_size / 2**20
        print(f"  populate (Core bulk insert + {num_tasks} image files, not part of the target): {populate:.1f} s; "
              f"{counts['submissions']:,} submissions, {counts['layers']:,} layers "
              f"({counts['layer_mib']:.0f} MiB of ids), database {db_mib:.0f} MiB")
        out = workdir / "export-out"
        gc.collect()
        profiler = cProfile.Profile() if profile else None
        rss_before = rss_mib()
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        manifest = export_training_data(store, out, ExportFilters())
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
        npz = out / f"contact_{TOPOLOGY}.npz"
        npz_bytes = npz.stat().st_size if npz.exists() else 0
        peak = rss_mib()
        print(f"  export_training_data: {seconds:.2f} s{' (under cProfile: inflated)' if profiler else ''}, "
              f"{seconds / EXPORT_TARGET_S:.0%} of the {EXPORT_TARGET_S:.0f} s target; "
              f"{manifest.counts.get('tasks', 0):,} tasks exported")
        print(f"  {npz.name}: {npz_bytes / 2**20:.1f} MiB; whole export folder "
              f"{sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 2**20:.1f} MiB")
        print(f"  peak resident memory of this process: {peak:.0f} MiB (before the export: {rss_before:.0f} MiB)")
        if profiler:
            print("  cProfile, top 25 by cumulative time:")
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(25)
            print("\n".join("    " + line for line in stream.getvalue().splitlines() if line.strip()))
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(15)
            print("  cProfile, top 15 by own time:")
            print("\n".join("    " + line for line in stream.getvalue().splitlines() if line.strip()))
        return ExportResult(populate, seconds, counts["submissions"], npz_bytes, manifest.counts.get("tasks", 0), peak)
    finally:
        store.close()


# ---- main ---------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--per-writer", type=int, default=300, help="submissions per writer thread")
    parser.add_argument("--tasks", type=int, default=1000, help="tasks in the concurrent-writer batch")
    parser.add_argument("--export-tasks", type=int, default=EXPORT_SUBMISSIONS // REDUNDANCY,
                        help=f"tasks for the export (x{REDUNDANCY} submissions each)")
    parser.add_argument("--profile-export", action="store_true", help="run the export under cProfile and print it")
    parser.add_argument("--skip", action="append", default=[], choices=("sqlite", "postgresql", "export"))
    parser.add_argument("--no-analyze", action="store_true",
                        help="PostgreSQL: start the writers right after the import, before any table statistics")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    workdir = Path(os.environ["STUDIO_VAR"])
    print(f"machine: {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}, SQLAlchemy {sa.__version__}, "
          f"numpy {np.__version__}; 1-minute load average {os.getloadavg()[0]:.2f}; work folder {workdir} "
          "(deleted at exit)")
    started_all = time.perf_counter()
    workloads: list[WorkloadResult] = []
    pg_note = None
    export: ExportResult | None = None

    if {"sqlite", "postgresql"} - set(args.skip):
        started = time.perf_counter()
        batch = make_batch_folder(workdir / "batch", args.tasks, args.seed)
        print(f"batch folder: {args.tasks} tiny {IMAGE_SIDE}x{IMAGE_SIDE} PNGs + tasks.jsonl "
              f"in {time.perf_counter() - started:.2f} s")
    if "sqlite" not in args.skip:
        workloads.append(run_workload("sqlite-file", f"sqlite:///{workdir / 'writers.db'}", batch,
                                      workdir / "sqlite-data", args.writers, args.per_writer, args.seed))
    if "postgresql" not in args.skip:
        url = os.environ.get("STUDIO_TEST_PG_URL")
        if not url:
            pg_note = "skipped: STUDIO_TEST_PG_URL is not set (eval \"$(.ci/start-postgres)\" starts a server)"
        else:
            pg_note = reset_postgres_schema(url)
        if pg_note:
            print(f"\n[postgresql] {pg_note}")
        else:
            try:
                workloads.append(run_workload("postgresql", url, batch, workdir / "pg-data", args.writers,
                                              args.per_writer, args.seed, analyze=not args.no_analyze))
            except sa.exc.SQLAlchemyError as error:  # a server that drops mid-run: report it, keep the rest
                pg_note = f"failed: {type(error).__name__}: {str(error).splitlines()[0]}"
                print(f"\n[postgresql] {pg_note}")
    if "export" not in args.skip:
        export = run_export(workdir, args.export_tasks, args.seed, args.profile_export)

    rows = []
    for w in workloads:
        rows.append((f"{w.backend}: next_task+submit pairs/s ({args.writers} writers)", f"{w.submissions_per_s:.0f}",
                     f">= {SUBMIT_TARGET_PER_S:.0f}", f"{w.submissions_per_s / SUBMIT_TARGET_PER_S:.2f}",
                     "yes" if w.submissions_per_s >= SUBMIT_TARGET_PER_S else "NO"))
        rows.append((f"{w.backend}: wall time, {w.acknowledged} submissions", f"{w.wall_s:.2f} s", "-", "-", ""))
        rows.append((f"{w.backend}: next_task p50 / p95", f"{w.next_p50_ms:.1f} / {w.next_p95_ms:.1f} ms",
                     "-", "-", ""))
        rows.append((f"{w.backend}: submit p50 / p95", f"{w.submit_p50_ms:.1f} / {w.submit_p95_ms:.1f} ms",
                     "-", "-", ""))
        rows.append((f"{w.backend}: database checks, errors", f"{'OK' if w.checks_ok else 'FAIL'}, {w.errors}",
                     "OK, 0", "-", "yes" if w.checks_ok and not w.errors else "NO"))
    if pg_note:
        rows.append(("postgresql: next_task+submit pairs/s", ("skipped" if pg_note.startswith("skipped") else "not measured") + " (reason above)",
                     f">= {SUBMIT_TARGET_PER_S:.0f}", "-", "-"))
    if export:
        rows.append((f"export: {export.submissions:,} submissions", f"{export.export_s:.2f} s",
                     f"<= {EXPORT_TARGET_S:.0f} s", f"{export.export_s / EXPORT_TARGET_S:.2f}",
                     "yes" if export.export_s <= EXPORT_TARGET_S else "NO"))
        rows.append(("export: populate (not in target)", f"{export.populate_s:.1f} s", "-", "-", ""))
        rows.append(("export: npz size", f"{export.npz_bytes / 2**20:.1f} MiB", "-", "-", ""))
        rows.append(("export: peak RSS of the process", f"{export.peak_rss_mib:.0f} MiB", "-", "-", ""))
    header = ("figure", "measured", "target", "ratio", "met")
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    print(f"\nsummary (total run {time.perf_counter() - started_all:.0f} s; 1-minute load average now "
          f"{os.getloadavg()[0]:.2f}; ratio = measured / target)")
    for row in [header, tuple("-" * w for w in widths)] + rows:
        print("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    main()
