"""``/admin``: the lab's console (admin login required). Import, live QC, the task list (filters, priority,
retire, promote, and each task's review on selecting its row), export for training."""
from __future__ import annotations

import html
import shutil
import tempfile
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from annotations import review, task_admin
from annotations.batch import BatchDefaults, import_batch
from annotations.errors import UnknownTaskError
from annotations.export import ExportFilters, export_interactvlm, export_training_data
from annotations.files import safe_member_name
from annotations.vocabulary import normalise_labels
from engine import rll
from engine.body.topology import BODY_PREFERENCE, TOPOLOGY_VERTEX_COUNTS, installed_topologies
from engine.errors import InputError
from studio import exports
from studio.context import STORE_LANE, Studio, user_errors
from studio.crowd import crowd_tab
from studio.study_admin import build_studies_tab
from studio.uploads import accept_upload

MANIFEST_SUFFIXES = (".csv", ".jsonl")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
REFRESH_SECONDS = 15
REVIEW_RESOLUTION = 256
MAX_REVIEWED = 12


def stage_upload(studio: Studio, paths: list, folder: Path) -> Path:
    """Copy uploaded files into one folder under safe names; return what to import (zip, manifest or folder).

    Every file must be an upload to this server (``accept_upload``), never a path the client names.
    """
    if not paths:
        raise InputError("upload a .zip, or a tasks.csv / tasks.jsonl together with its images")
    for path in [accept_upload(studio, item, what="every batch file") for item in paths]:
        shutil.copyfile(path, folder / safe_member_name(path.name))
    names = sorted(item.name for item in folder.iterdir())
    zips = [name for name in names if name.lower().endswith(".zip")]
    manifests = [name for name in names if name.lower().endswith(MANIFEST_SUFFIXES)]
    if len(zips) + len(manifests) > 1:
        raise InputError(f"upload one batch at a time: found {zips + manifests}")
    return folder / (zips + manifests)[0] if zips or manifests else folder


def import_upload(studio: Studio, paths, labels: str, topology: str, redundancy, force: bool = False) -> str:
    """Import an uploaded batch; tasks on a body this server cannot show are refused unless ``force``."""
    if topology not in TOPOLOGY_VERTEX_COUNTS:
        raise InputError(f"choose a body topology: {', '.join(BODY_PREFERENCE)}")
    defaults = BatchDefaults(labels=normalise_labels([item for item in str(labels or "").split("|") if item.strip()],
                                                     studio.store.config.max_labels) if labels else (),
                             topology=topology, redundancy=int(redundancy or 3))
    with tempfile.TemporaryDirectory() as folder:
        source = stage_upload(studio, list(paths or []), Path(folder))
        report = import_batch(studio.store, source, defaults=defaults, models_dir=studio.settings.models_dir,
                              force=bool(force))
    return (f"Imported batch {report.batch_id} (<code>{html.escape(report.name)}</code>): {report.num_tasks} tasks, "
            f"{report.num_images} images ({report.new_images} new).")


def dashboard(studio: Studio) -> tuple:
    """(summary html, annotator table, task table, agreement plot data, gold plot data, throughput plot data)."""
    report = review.quality_report(studio.store)
    annotators = pd.DataFrame([{"annotator": a.external_id, "qualification": a.qualification,
                                "submissions": a.submissions, "gold submissions": a.gold_submissions,
                                "gold accuracy (IoU)": _rounded(a.gold_accuracy),
                                "median seconds": _rounded(a.median_seconds)} for a in report.annotators],
                              columns=["annotator", "qualification", "submissions", "gold submissions",
                                       "gold accuracy (IoU)", "median seconds"])
    tasks = pd.DataFrame([{"task": t.task_id, "submissions": t.submissions, "flags": t.flags,
                           "kappa": _rounded(t.agreement.fleiss_kappa), "mean IoU": _rounded(t.agreement.mean_pairwise_iou)}
                          for t in report.tasks], columns=["task", "submissions", "flags", "kappa", "mean IoU"])
    starts, counts = review.throughput(studio.store, bucket_seconds=60, buckets=60)
    flow = pd.DataFrame({"minutes ago": starts / 60.0, "submissions per minute": counts})
    agreement = tasks.dropna(subset=["kappa"]).assign(task=lambda frame: frame["task"].astype(str))
    gold = annotators.dropna(subset=["gold accuracy (IoU)"])
    submitted = sum(a.submissions > 0 for a in report.annotators)  # not everyone who merely opened the page
    summary = (f"<p id='qc-summary'><b>{report.total_submissions}</b> submissions from <b>{submitted}</b> "
               f"annotators on <b>{len(report.tasks)}</b> tasks; <b>{int(counts[-10:].sum())}</b> in the last 10 min.</p>")
    return summary, annotators, tasks, agreement, gold, flow


def _rounded(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 4)


def review_task(studio: Studio, task_id) -> tuple[list, str]:
    """Each annotator's layers and the aggregate, rendered side by side, with a caption per image."""
    if task_id is None:
        raise InputError("select a task in the list first")
    task_id = _task_id(task_id)
    task = studio.store.task(task_id)
    entries = review.load_task_annotations(studio.store, task_ids=[task_id])
    if task_id not in entries:
        return [], f"<p id='review-info'>Task {task_id} has no submissions yet.</p>"
    entry = entries[task_id]
    names = {a.id: a.external_id for a in map(studio.store.annotator, entry.annotator_ids)}
    colours = list(exports.label_colours(task.labels).values())
    shown = [(entry.layers[i].astype(np.float32), f"{names[a]}") for i, a in enumerate(entry.annotator_ids[:MAX_REVIEWED])]
    shown.append((review.aggregate(entry).astype(np.float32), "aggregate (majority vote)"))
    gallery = [(render_layers(studio, task, values, colours), caption) for values, caption in shown]
    legend = " &middot; ".join(f'<span style="color:{c}">&#9632;</span> {html.escape(label)}'
                               for label, c in zip(task.labels, colours))
    return gallery, f"<p id='review-info'>Task {task_id}: {len(entry.annotator_ids)} submissions. {legend}</p>"


def render_layers(studio: Studio, task, values: np.ndarray, colours: list[str]) -> np.ndarray:
    """(H, 2W, 3) uint8: the front and back views of the task's body (whole, uncropped) or object coloured by
    (L, V) values."""
    if task.kind == "human_contact":
        body = studio.body(task.topology)
        vertices, faces, preset, shown = body.vitruvian_vertices(), body.faces, "body_whole", (0, 1)
        rgb = exports.blend_vertex_colours(values, colours)
    else:
        vertices, faces = studio.store.object_geometry(task.object_id)
        preset, shown = ("object_mesh" if faces is not None else "object_points"), (0, 2)
        rgb = exports.heat_colours(values[0])
    views = rll.render_views(vertices, faces, preset=preset, resolution=REVIEW_RESOLUTION, topology=task.topology,
                             vertex_colours=rgb.astype(np.float32))
    return np.concatenate([views.images[shown[0]], views.images[shown[1]]], 1)


ANY = "any"
COLUMNS = ["task", "batch", "status", "kind", "labels", "topology", "priority", "submissions", "redundancy", "flags",
           "kappa", "image"]


def batch_choices(studio: Studio) -> list:
    return [("any batch", ANY)] + [(f"{batch_id}: {name} ({count} tasks)", str(batch_id))
                                   for batch_id, name, count in task_admin.batches(studio.store)]


def topology_choices(studio: Studio) -> list[str]:
    return [ANY] + task_admin.topologies(studio.store)


def task_filters(batch, status, topology, min_kappa, max_kappa) -> task_admin.TaskFilters:
    """The list's filters from the form ("any" or empty: no filter)."""
    chosen = lambda value: None if value in (None, "", ANY) else str(value)
    batch_id = chosen(batch)
    if batch_id is not None and not (batch_id.isdigit() and len(batch_id) < 10):
        raise InputError("choose a batch from the list")
    topology = chosen(topology)
    if topology is not None and len(topology) > 64:
        raise InputError("choose a topology from the list")
    return task_admin.TaskFilters(batch_id=int(batch_id) if batch_id else None, status=chosen(status),
                                  topology=topology,
                                  min_kappa=_optional_number(min_kappa, "the lowest agreement"),
                                  max_kappa=_optional_number(max_kappa, "the highest agreement"))


def tasks_frame(studio: Studio, batch=ANY, status=ANY, topology=ANY, min_kappa="", max_kappa="") -> pd.DataFrame:
    """The filtered task list (newest first, at most ``task_admin.MAX_LISTED`` rows)."""
    rows = task_admin.list_tasks(studio.store, task_filters(batch, status, topology, min_kappa, max_kappa))
    return pd.DataFrame([[t.task_id, f"{t.batch_id}: {t.batch_name}" if t.batch_id else "", t.status, t.kind,
                          ", ".join(t.labels), t.topology, t.priority, t.submissions, t.redundancy, t.flags, t.kappa,
                          t.image_name] for t in rows], columns=COLUMNS)


def priority_action(studio: Studio, task_id: int, priority) -> str:
    value = task_admin.set_priority(studio.store, task_id, priority)
    return f"Task {task_id} now has priority {value}."


def retire_action(studio: Studio, task_id: int, _priority=None) -> str:
    task_admin.retire_task(studio.store, task_id)
    return f"Task {task_id} is retired: nobody is handed it again (its submissions stay)."


def retire_batch_action(studio: Studio, task_id: int, _priority=None) -> str:
    batch_id = studio.store.task(task_id).batch_id
    if batch_id is None:
        raise InputError(f"task {task_id} belongs to no batch")
    count = task_admin.retire_batch(studio.store, batch_id)
    return f"Batch {batch_id} is retired ({count} task(s) retired now)."


def promote_action(studio: Studio, task_id: int, _priority=None) -> str:
    task = task_admin.promote_demo_task(studio.store, task_id)
    return f"Task {task.id} is in the crowd queue now."


def _optional_number(value, name: str) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise InputError(f"{name} must be a number or empty, got {str(value)[:40]!r}") from None


def _task_id(value) -> int:
    try:
        task_id = int(value)
    except (TypeError, ValueError):
        raise InputError("select a task in the list first") from None
    if task_id < 1:
        raise UnknownTaskError(f"no task with id {task_id}")
    return task_id


def export_zip(studio: Studio, min_agreement, only_qualified: bool, include_flagged: bool, min_annotators,
               source: str, progress, export_format: str = "studio") -> str:
    """Export for training into a fresh folder and zip it with fixed dates (same store, same bytes)."""
    filters = ExportFilters(source=source, min_agreement=_optional_number(min_agreement, "minimum agreement"),
                            exclude_flagged=not include_flagged, only_qualified=bool(only_qualified),
                            min_annotators=int(min_annotators or 1))
    folder = studio.output_folder()
    progress(0.1, desc="aggregating the annotations")
    write = export_interactvlm if export_format == "interactvlm" else export_training_data
    manifest = write(studio.store, folder / "export", filters, models_dir=studio.settings.models_dir)
    progress(0.8, desc="zipping")
    target = folder / f"export-{manifest.export_id}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in manifest.directory.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(manifest.directory)), ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return str(target)


def build_admin(studio: Studio) -> gr.Blocks:
    lane = {"concurrency_id": STORE_LANE, "concurrency_limit": studio.settings.store_concurrency}
    with gr.Blocks(title="Interaction Studio: admin") as page:
        gr.Markdown("# Admin console\nImport batches, watch quality, review tasks and export training data.")
        with gr.Tab("Import"):
            files = gr.File(label="a .zip, or tasks.csv / tasks.jsonl with its images", file_count="multiple",
                            elem_id="import-files")
            labels = gr.Textbox(label="labels for images without a manifest (separated by |)", elem_id="import-labels")
            installed = installed_topologies(studio.settings.models_dir)
            topology = gr.Dropdown([(f"{name} (installed)" if name in installed else f"{name} (file missing)", name)
                                    for name in BODY_PREFERENCE], value=installed[0],
                                   label="body topology (default: the best body installed)", elem_id="import-topology")
            force = gr.Checkbox(False, elem_id="import-force",
                                label="import even tasks on a body this server cannot show (nobody can paint them "
                                      "until its file is installed)")
            redundancy = gr.Number(3, precision=0, minimum=1, maximum=50, label="annotators per task")
            run_import = gr.Button("Import", variant="primary", elem_id="import")
            import_report = gr.HTML(elem_id="import-report")
        with gr.Tab("Quality"):
            summary = gr.HTML(elem_id="qc-summary-box")
            with gr.Row():
                agreement_plot = gr.BarPlot(x="task", y="kappa", title="agreement per task (Fleiss' kappa)")
                gold_plot = gr.BarPlot(x="annotator", y="gold accuracy (IoU)", title="annotator accuracy on gold")
                flow_plot = gr.LinePlot(x="minutes ago", y="submissions per minute", title="throughput")
            annotator_table = gr.Dataframe(label="annotators", interactive=False, elem_id="qc-annotators")
            task_table = gr.Dataframe(label="tasks", interactive=False, elem_id="qc-tasks")
            refresh = gr.Button("Refresh", elem_id="qc-refresh")
            timer = gr.Timer(REFRESH_SECONDS)
        with gr.Tab("Tasks"):
            with gr.Row():
                batch_filter = gr.Dropdown(batch_choices(studio), value=ANY, label="batch", elem_id="tasks-batch",
                                           allow_custom_value=True)  # batches come and go; checked on use
                status_filter = gr.Dropdown([ANY, *task_admin.STATUSES], value=ANY, label="status",
                                            elem_id="tasks-status")
                topology_filter = gr.Dropdown(topology_choices(studio), value=ANY, label="topology",
                                              elem_id="tasks-topology", allow_custom_value=True)
                min_kappa = gr.Textbox("", label="agreement (kappa) at least", elem_id="tasks-min-kappa")
                max_kappa = gr.Textbox("", label="agreement (kappa) at most", elem_id="tasks-max-kappa")
            list_button = gr.Button("Show tasks", elem_id="tasks-show")
            task_list = gr.Dataframe(label="tasks (select a row to review it and act on it)", interactive=False,
                                     elem_id="task-list")
            task_id = gr.Number(label="selected task", precision=0, interactive=False, elem_id="review-task")
            with gr.Row():
                priority = gr.Number(0, precision=0, label="priority (higher is served first)", elem_id="task-priority")
                set_priority = gr.Button("Set priority", elem_id="task-set-priority")
                retire = gr.Button("Retire this task", elem_id="task-retire")
                retire_all = gr.Button("Retire its whole batch", elem_id="task-retire-batch")
                promote_listed = gr.Button("Promote this demo task to the crowd", elem_id="task-promote")
            task_status = gr.Markdown(elem_id="task-action-status")
            review_info = gr.HTML(elem_id="review-info-box")
            gallery = gr.Gallery(label="each annotator's layers (front | back) and the aggregate", columns=3,
                                 elem_id="review-gallery")
        with gr.Tab("Export"):
            source = gr.Radio(["consensus", "gold"], value="consensus", label="source")
            export_format = gr.Radio(["studio", "interactvlm"], value="studio", elem_id="export-format",
                                     label="format (interactvlm: the release's DAMON folder for its training code)")
            min_agreement = gr.Textbox("", label="minimum agreement (Fleiss' kappa in [-1, 1]; empty = keep every task)",
                                       elem_id="export-min-agreement")
            min_annotators = gr.Number(1, precision=0, minimum=1, label="minimum annotators")
            only_qualified = gr.Checkbox(False, label="only qualified annotators")
            include_flagged = gr.Checkbox(False, label="include flagged tasks")
            run_export = gr.Button("Export for training", variant="primary", elem_id="export")
            export_file = gr.File(label="export (DAMON-style npz, PIAD files, manifest)", elem_id="export-file")
        crowd_tab(studio, lane)  # signed worker links and the demo pool (studio.crowd)
        build_studies_tab(studio)

        quality = [summary, annotator_table, task_table, agreement_plot, gold_plot, flow_plot]

        @user_errors
        def on_import(paths, label_text, topology_value, redundancy_value, force_value, progress=gr.Progress()):
            progress(0.1, desc="checking every row")
            return import_upload(studio, paths, label_text, topology_value, redundancy_value, force_value)

        @user_errors
        def on_export(agreement_value, qualified, flagged, annotators_value, source_value, format_value,
                      progress=gr.Progress()):
            if format_value not in ("studio", "interactvlm"):
                raise InputError("format must be 'studio' or 'interactvlm'")
            return export_zip(studio, agreement_value, qualified, flagged, annotators_value, source_value, progress,
                              format_value)

        run_import.click(on_import, inputs=[files, labels, topology, redundancy, force], outputs=[import_report],
                         api_name="import_batch", **lane)
        show_quality = user_errors(lambda: dashboard(studio))
        refresh.click(show_quality, outputs=quality, api_name="quality", **lane)
        timer.tick(show_quality, outputs=quality, api_name="quality_tick", api_visibility="private", **lane)
        page.load(show_quality, outputs=quality, api_name="quality_on_load", api_visibility="private", **lane)
        filters = [batch_filter, status_filter, topology_filter, min_kappa, max_kappa]
        show_tasks = user_errors(lambda *values: tasks_frame(studio, *values))
        list_button.click(show_tasks, inputs=filters, outputs=[task_list], api_name="task_list", **lane)

        def on_select(table, event: gr.SelectData):
            row = event.row_value if event is not None else None
            if not row:
                raise gr.Error("select a task row")
            return int(row[0]), int(row[COLUMNS.index("priority")])

        task_list.select(on_select, inputs=[task_list], outputs=[task_id, priority], api_visibility="private",
                         api_name="select_task").then(
            user_errors(lambda value: review_task(studio, value)), inputs=[task_id], outputs=[gallery, review_info],
            api_name="review_task", **lane)

        def act(action):
            @user_errors
            def run(selected, priority_value, *values):
                message = action(studio, _task_id(selected), priority_value)
                return message, tasks_frame(studio, *values)
            return run

        for button, action, name in ((set_priority, priority_action, "set_priority"), (retire, retire_action, "retire_task"),
                                     (retire_all, retire_batch_action, "retire_batch"),
                                     (promote_listed, promote_action, "promote_listed")):
            button.click(act(action), inputs=[task_id, priority, *filters], outputs=[task_status, task_list],
                         api_name=name, **lane)
        refresh_choices = lambda: (gr.update(choices=batch_choices(studio)), gr.update(choices=topology_choices(studio)))
        page.load(refresh_choices, outputs=[batch_filter, topology_filter], api_name="task_filters",
                  api_visibility="private", **lane)
        run_export.click(on_export, inputs=[min_agreement, only_qualified, include_flagged, min_annotators, source,
                                            export_format],
                         outputs=[export_file], api_name="export", **lane)
    return page
