"""``/``: the public demo. Semantic human contact and object affordance, each with downloads and a way to correct.

Every contact prediction is kept as a run (kind "contact", ``annotations.runs``) with its ``contact.glb``,
``views.png`` and the input photo; with an InteractVLM checkpoint installed the category-prior baseline is
computed beside it (cheap: no model) and kept too, under the same group key (image hash + labels), so a
perceptual study can pair the two.

Both tabs run on the GPU lane (one ``concurrency_id``, limit from the settings). "Correct this" and
"Paint instead" turn the result into a task in the demo pool, held by a fresh opaque worker id bound
to the visitor's browser session, and open the painter at ``/annotate?worker=...`` in a new tab. No
crowd annotator is served a demo task unless an admin promotes it; task creation is rate-limited per
client address.
"""
from __future__ import annotations

import contextlib
import hashlib
import html
import io
import secrets
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from annotations import batch, workflow
from annotations.domain import Run
from annotations.files import CheckedImage, check_image
from annotations.runs import input_photo_name, save_run
from engine import rll
from engine.contact.predict import MAX_BATCH, human_contact_model
from engine.contact.vocabulary import AFFORDANCES, OBJECT_LABELS, resolve_affordance, resolve_object_label
from engine.errors import InputError
from engine.objects import ObjectGeometry, builtin_object, builtin_object_names, load_object_file
from studio import exports
from studio.context import GPU_LANE, Studio, user_errors
from studio.crowd import client_address, session_digest
from studio.genzi import GenziDemo, genzi_tab
from studio.hoi import build_hoi_tab
from studio.resources import header_pixels
from studio.uploads import EXAMPLES, accept_upload

AFFORDANCE_MODEL = "interactvlm-oafford"
PRIOR_MODEL = "category-prior"
PREVIEW_SIZE = 512
OPEN_JS = "(url) => { if (url) window.open(url, '_blank'); return []; }"
UPLOAD_CHOICE = "my upload"


@dataclass(frozen=True)
class ContactRun:
    """The last contact result of a session, kept server-side so "Correct this" can turn it into a task.

    probabilities: (L, V) float32 on ``topology``.
    """

    image_path: str
    labels: tuple[str, ...]
    topology: str
    probabilities: np.ndarray
    source: str


@dataclass(frozen=True)
class ContactPrediction:
    """One press of Predict: the result, the checked input photo, and the category-prior baseline's result on
    the same image and labels (None when the prior made ``run`` itself, or for binary contact)."""

    run: ContactRun
    results: list
    photo: CheckedImage
    baseline: tuple[ContactRun, list] | None = None


def contact_run(image_path: str, results) -> ContactRun:
    names = [result.object_label or "contact" for result in results]
    return ContactRun(image_path, tuple(names), results[0].topology,
                      np.stack([result.probabilities for result in results]), results[0].source)


def contact_method(source: str) -> str:
    """A contact run's method: the baseline's own name, or the InteractVLM checkpoint that produced it."""
    return source if source.startswith("baseline") else f"interactvlm ({source})"


def contact_group_key(image_sha256: str, labels) -> str:
    """Contact runs on the same image and the same labels (in any order) share this key, so a study pairs them."""
    return hashlib.sha256(f"{image_sha256}\n{'|'.join(sorted(labels))}".encode()).hexdigest()


@dataclass(frozen=True)
class ObjectRun:
    """An object affordance request to paint instead of predict (no checkpoint)."""

    image_path: str
    affordance: str
    geometry: ObjectGeometry


def requested_labels(labels) -> list[str | None]:
    """Resolved, de-duplicated object labels; none at all means binary contact with anything."""
    if isinstance(labels, str):
        labels = [labels]
    resolved = list(dict.fromkeys(resolve_object_label(str(label)) for label in (labels or []) if str(label).strip()))
    if len(resolved) > MAX_BATCH:
        raise InputError(f"at most {MAX_BATCH} object labels at once, got {len(resolved)}")
    return resolved or [None]


def image_file(studio: Studio, image) -> str:
    """The real path of the uploaded image (``accept_upload``: never a file the server did not receive)."""
    if not image:
        raise InputError("upload an image first (JPEG, PNG, WEBP or BMP)")
    return str(accept_upload(studio, image, what="the image"))


def checked_image(studio: Studio, image) -> bytes:
    """The upload's bytes once the store's checks pass (format, size from the header, then a full decode).

    Call it inside ``decoding`` (the lane's pixel budget). Messages name the file by its own name,
    never by the server's upload path.
    """
    return checked_upload(studio, image).data


def checked_upload(studio: Studio, image) -> CheckedImage:
    """``checked_image`` with the check's findings (hash, format)."""
    path = Path(image_file(studio, image))
    return check_image(path.read_bytes(), path.name, studio.store.config.image_limits)


@contextlib.contextmanager
def decoding(studio: Studio, image):
    """Hold the image's pixel count (from its header) in the GPU lane's budget while the request runs."""
    with studio.pixel_budgets[GPU_LANE].hold(header_pixels(Path(image_file(studio, image)))):
        yield


class ContactDemo:
    """Handlers of the semantic contact tab."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self._views: dict[tuple[str, int], np.ndarray] = {}

    def predict(self, image, labels, progress) -> ContactPrediction:
        with decoding(self.studio, image):
            return self._predict(image, labels, progress)

    def _predict(self, image, labels, progress) -> ContactPrediction:
        path, photo = image_file(self.studio, image), checked_upload(self.studio, image)
        wanted = requested_labels(labels)
        requests = [(photo.data, label) for label in wanted]
        name = human_contact_model(self.studio.engine)
        with self.studio.engine.use(name, progress=lambda f, text: progress(0.1 + 0.4 * f, desc=text)) as model:
            progress(0.5, desc=f"predicting contact for {len(wanted)} label(s)")
            results = model.predict_human_contact_batch(requests)
        baseline = None
        if name != PRIOR_MODEL and None not in wanted:  # the prior needs a label; binary contact has no baseline
            progress(0.7, desc="the category-prior baseline (kept beside the result for comparison)")
            with self.studio.engine.use(PRIOR_MODEL) as prior:
                prior_results = prior.predict_human_contact_batch(requests)
            baseline = (contact_run(path, prior_results), prior_results)
        progress(0.8, desc="writing the 3D model and downloads")
        return ContactPrediction(contact_run(path, results), results, photo, baseline)

    def outputs(self, run: ContactRun, results) -> tuple:
        """(glb path, overlay grid, answer html, source html, [npz, glb] downloads)."""
        colours = list(exports.label_colours(run.labels).values())
        folder = self.studio.output_folder()
        glb, grid = self.stimuli(run, results, folder)
        smplx = [result.smplx_probabilities for result in results]
        npz = exports.write_bytes(folder, "contact.npz", exports.contact_npz(
            list(run.labels), run.probabilities, run.topology, run.source,
            np.stack(smplx) if all(item is not None for item in smplx) else None, Path(run.image_path).name,
            answers=[result.answer for result in results]))
        return str(glb), str(grid), answer_html(run, results, colours), source_html(run.source), [str(npz), str(glb)]

    def stimuli(self, run: ContactRun, results, folder: Path) -> tuple[Path, Path]:
        """``contact.glb`` (the body coloured per label) and ``views.png`` (the four views with the masks)."""
        colours = list(exports.label_colours(run.labels).values())
        body = self.studio.body(run.topology)
        vertices = body.vitruvian_vertices().detach().cpu().numpy()
        glb = exports.write_bytes(folder, "contact.glb", exports.coloured_glb(
            vertices, np.asarray(body.faces), exports.blend_vertex_colours(run.probabilities, colours)))
        grid = exports.write_bytes(folder, "views.png", exports.png_bytes(exports.overlay_grid(
            self.body_views(run.topology, results[0].view_masks.shape[-1]),
            np.stack([result.view_masks for result in results]), colours)))
        return Path(glb), Path(grid)

    def keep(self, prediction: ContactPrediction, glb, grid) -> list[Run]:
        """Save the prediction, and the baseline computed beside it, as contact runs in one group (image hash +
        labels), each with ``contact.glb``, ``views.png`` and the input photo (a study's reference image)."""
        kept = [(prediction.run, prediction.results, Path(glb), Path(grid))]
        if prediction.baseline is not None:
            run, results = prediction.baseline
            kept.append((run, results, *self.stimuli(run, results, self.studio.output_folder())))
        group = contact_group_key(prediction.photo.sha256, prediction.run.labels)
        photo = {input_photo_name(prediction.photo.suffix): prediction.photo.data}
        return [save_run(self.studio.store, kind="contact", method=contact_method(run.source)[:200],
                         inputs={"image": Path(run.image_path).name, "labels": list(run.labels),
                                 "topology": run.topology},
                         files={"contact.glb": glb, "views.png": grid, **photo}, group_key=group,
                         summary={"parts": {label: list(result.parts) for label, result in zip(run.labels, results)}})
                for run, results, glb, grid in kept]

    def body_views(self, topology: str, resolution: int) -> np.ndarray:
        """(4, S, S, 3) uint8 renders of the body the masks were predicted on (cached)."""
        key = (topology, resolution)
        if key not in self._views:
            body = self.studio.body(topology)
            grey = np.tile(exports.BASE_GREY.astype(np.float32), (body.num_vertices, 1))  # masks stand out on grey
            self._views[key] = rll.render_views(body.vitruvian_vertices(), body.faces, preset="body",
                                                resolution=resolution, topology=topology, vertex_colours=grey).images
        return self._views[key]

    def correct(self, run: ContactRun | None, request=None) -> str:
        """Make the result a demo-pool task held by a fresh worker id; returns the painter's URL."""
        if run is None:
            raise InputError("predict contact first; then you can correct the result")
        if "contact" in run.labels:
            raise InputError("binary contact has no object label to paint; predict with at least one object label")
        browser = visitor_session(self.studio, request)
        if not Path(run.image_path).is_file():
            raise InputError("the image of this result is no longer on the server; predict again")
        prediction = {label: values for label, values in zip(run.labels, run.probabilities)}
        labels = run.labels + (("supporting",) if "supporting" not in run.labels else ())
        task_id = batch.add_task(self.studio.store, Path(run.image_path).read_bytes(), Path(run.image_path).name,
                                 labels=labels, topology=run.topology, prediction=prediction,
                                 model_name=run.source, model_version="studio demo", source="studio demo",
                                 pool="demo", prediction_source="studio demo: contact tab")
        return hand_to_new_worker(self.studio, task_id, browser, request)


def visitor_session(studio: Studio, request) -> str:
    """The visitor's browser session digest, once the per-address task limit allows one more task."""
    browser = session_digest(request)
    if browser is None:
        raise InputError("painting needs cookies: allow cookies for this site and reload the page")
    studio.task_creations.check(client_address(request))
    return browser


def hand_to_new_worker(studio: Studio, task_id: int, browser: str, request=None) -> str:
    """A fresh demo worker id, bound to the visitor's browser session, holding the (demo-pool) task; returns
    the painter's absolute URL on the address the visitor used."""
    worker = f"demo-{secrets.token_hex(8)}"
    annotator = studio.store.ensure_annotator(worker)
    studio.store.bind_session(annotator.id, browser)
    workflow.assign_task(studio.store, annotator.id, task_id)
    return f"{site_url(request)}/annotate?worker={worker}"


def site_url(request) -> str:
    """``scheme://host[:port]`` of the request as the browser addressed it ("" without a request)."""
    url = getattr(request, "url", None) if request is not None else None
    return f"{url.scheme}://{url.netloc}" if url is not None and url.netloc else ""


def link_html(url: str, text: str, elem_id: str) -> str:
    """A clickable absolute link (opens in a new tab), escaped."""
    if not url:
        return ""
    safe = html.escape(url, quote=True)
    return (f'<p><a id="{elem_id}" href="{safe}" target="_blank" rel="noopener">{html.escape(text)}</a> '
            f'<span style="opacity:.7">{safe}</span></p>')


def answer_html(run: ContactRun, results, colours: list[str]) -> str:
    rows = []
    for result, label, colour in zip(results, run.labels, colours):
        parts = ", ".join(html.escape(part) for part in result.parts) or "no part"
        rows.append(f'<li><span style="color:{colour}">&#9632;</span> <b>{html.escape(label)}</b>: '
                    f'{html.escape(exports.visible_text(result.answer))} <i>(contacted parts: {parts})</i></li>')
    return "<ul id='contact-answers'>" + "".join(rows) + "</ul>"


def source_html(source: str) -> str:
    kind = "a baseline, not the model" if source.startswith("baseline:") else "InteractVLM checkpoint"
    return f"<p id='model-source'>Produced by <b>{html.escape(source)}</b> ({kind}).</p>"


class AffordanceDemo:
    """Handlers of the affordance tab."""

    def __init__(self, studio: Studio):
        self.studio = studio

    def missing_files(self) -> tuple[Path, ...]:
        status = {entry.name: entry for entry in self.studio.engine.status().models}
        return status[AFFORDANCE_MODEL].missing

    def shown(self, path: Path) -> str:
        """A model file as visitors may see it: relative to the models folder, never the server's path."""
        try:
            return str(Path(path).relative_to(self.studio.settings.models_dir))
        except ValueError:
            return Path(path).name

    def notice(self) -> str:
        missing = self.missing_files()
        if not missing:
            return ""
        files = "".join(f"<li><code>{html.escape(self.shown(path))}</code></li>" for path in missing)
        return ("<div id='affordance-missing'><b>No affordance checkpoint.</b> Predicting affordance needs these "
                f"files, which are missing:<ul>{files}</ul>You can still <b>paint</b> an affordance annotation on the "
                "object instead: press <i>Paint instead</i>.</div>")

    def geometry(self, choice: str, upload, object_label: str) -> ObjectGeometry:
        if choice == UPLOAD_CHOICE:
            if not upload:
                raise InputError("choose a built-in object or upload a mesh or point cloud")
            path = accept_upload(self.studio, upload, what="the object file")
            limit = self.studio.settings.max_object_bytes
            if path.stat().st_size > limit:  # refused by its size, before a byte is parsed
                raise InputError(f"the object file is larger than {limit // 2**20} MB; at most {limit:,} bytes "
                                 "are accepted (decimate the mesh or subsample the points)")
            return load_object_file(path, path.name, class_name=object_label or "object")
        return builtin_object(choice)

    def predict(self, image, choice, upload, object_label, affordance, progress) -> tuple:
        with decoding(self.studio, image):
            return self._predict(image, choice, upload, object_label, affordance, progress)

    def _predict(self, image, choice, upload, object_label, affordance, progress) -> tuple:
        data = checked_image(self.studio, image)
        geometry = self.geometry(choice, upload, object_label)
        label = resolve_object_label(object_label) if object_label else geometry.class_name
        wanted = resolve_affordance(affordance)
        if self.missing_files():
            raise InputError("no affordance checkpoint is installed: "
                             + ", ".join(map(self.shown, self.missing_files()))
                             + ". Press 'Paint instead' to annotate the object by hand.")
        with self.studio.engine.use(AFFORDANCE_MODEL, progress=lambda f, text: progress(0.5 * f, desc=text)) as model:
            progress(0.5, desc="predicting affordance")
            result = model.predict_object_affordance(data, geometry.vertices, geometry.faces, object_label=label,
                                                     affordance=wanted)
        folder = self.studio.output_folder()
        glb = exports.write_bytes(folder, "affordance.glb", exports.coloured_glb(
            geometry.vertices, geometry.faces, exports.heat_colours(result.values)))
        npz = exports.write_bytes(folder, "affordance.npz", exports.affordance_npz(result, geometry.vertices))
        text = (f"<p id='affordance-answer'>{html.escape(exports.visible_text(result.answer))}</p>"
                + source_html(result.source))
        return str(glb), text, [str(npz), str(glb)]

    def paint_instead(self, image, choice, upload, object_label, affordance, request=None) -> str:
        browser = visitor_session(self.studio, request)
        with decoding(self.studio, image):
            path, data = image_file(self.studio, image), checked_image(self.studio, image)
        geometry = self.geometry(choice, upload, object_label)
        label = resolve_object_label(object_label) if object_label else geometry.class_name
        task_id = batch.add_task(self.studio.store, data, Path(path).name,
                                 labels=[resolve_affordance(affordance)], kind="object_affordance",
                                 object_points=geometry.vertices, object_faces=geometry.faces, object_class=label,
                                 source="studio demo", pool="demo")
        return hand_to_new_worker(self.studio, task_id, browser, request)


def example_rows() -> list[list]:
    """[image file, labels, the same image for the thumbnail column] per example."""
    rows = [["person_chair.png", ["chair"]], ["person_bottle.png", ["bottle"]], ["person_bowl.png", ["bowl", "chair"]]]
    return [[str(EXAMPLES / name), labels, str(EXAMPLES / name)] for name, labels in rows if (EXAMPLES / name).exists()]


def preview_image(studio: Studio, image) -> np.ndarray | None:
    """The visitor's image (upload or example) as shown beside the form: checked like a prediction's input,
    upright (EXIF), at most ``PREVIEW_SIZE`` pixels a side; None without an image."""
    from PIL import Image, ImageOps

    if not image:
        return None
    with decoding(studio, image):
        data = checked_image(studio, image)
        with Image.open(io.BytesIO(data)) as picture:
            shown = ImageOps.exif_transpose(picture).convert("RGB")
            shown.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
            return np.asarray(shown)


def labels_hint(studio: Studio) -> str:
    """The label box's hint, true to what Predict will do with this server's models."""
    if human_contact_model(studio.engine) == "category-prior":
        return ("object labels (pick or type at least one: without an InteractVLM checkpoint the category-prior "
                "baseline predicts from the label alone)")
    return "object labels (pick or type; none = binary contact with anything, predicted by the model)"


def build_demo(studio: Studio) -> gr.Blocks:
    gpu = {"concurrency_id": GPU_LANE, "concurrency_limit": studio.settings.gpu_concurrency}
    with gr.Blocks(title="Interaction Studio") as page:
        gr.Markdown("# Interaction Studio\n3D human-object contact from one image (InteractVLM). Results that look "
                    "wrong can be corrected in the painter and become training data.")
        with gr.Tab("Semantic contact"):
            contact_tab(ContactDemo(studio), gpu)
        with gr.Tab("Affordance"):
            affordance_tab(AffordanceDemo(studio), gpu)
        with gr.Tab("HOI reconstruction"):
            build_hoi_tab(studio, gpu)
        with gr.Tab("GenZI: people in a scene"):
            genzi_tab(GenziDemo(studio), gpu)
    return page


def contact_tab(demo: ContactDemo, gpu: dict) -> None:
    run = gr.State(None)
    with gr.Row():
        with gr.Column():
            image = gr.File(label="image (JPEG, PNG, WEBP or BMP)", file_types=[".jpg", ".jpeg", ".png", ".webp", ".bmp"],
                            elem_id="contact-image")
            preview = gr.Image(label="your image", interactive=False, elem_id="contact-preview", height=260)
            labels = gr.Dropdown(list(OBJECT_LABELS), multiselect=True, allow_custom_value=True, value=["chair"],
                                 label=labels_hint(demo.studio), elem_id="labels")
            predict = gr.Button("Predict contact", variant="primary", elem_id="predict-contact")
            gr.Examples(example_rows(), inputs=[image, labels, preview], elem_id="contact-examples")
        with gr.Column():
            viewer = gr.Model3D(label="contact on the body (one colour per object)", elem_id="contact-3d")
            source = gr.HTML(elem_id="contact-source")
            answers = gr.HTML(elem_id="contact-answer")
    with gr.Row():
        grid = gr.Image(label="the four InteractVLM views with the predicted masks", elem_id="contact-grid")
        with gr.Column():
            downloads = gr.File(label="downloads: contact.npz and contact.glb", file_count="multiple",
                                elem_id="contact-downloads")
            correct = gr.Button("Correct this in the painter", elem_id="correct")
            link = gr.Textbox(visible="hidden", elem_id="correct-url")
            link_box = gr.HTML(elem_id="correct-link")

    @user_errors
    def on_predict(image_value, label_values, progress=gr.Progress()):
        prediction = demo.predict(image_value, label_values, progress)
        shown = demo.outputs(prediction.run, prediction.results)
        demo.keep(prediction, shown[0], shown[1])
        return (prediction.run, *shown)

    @user_errors
    def on_correct(state, request: gr.Request):
        return demo.correct(state, request)

    predict.click(on_predict, inputs=[image, labels], outputs=[run, viewer, grid, answers, source, downloads],
                  api_name="predict_contact", **gpu)
    image.change(user_errors(lambda value: preview_image(demo.studio, value)), inputs=[image], outputs=[preview],
                 api_name="contact_preview", api_visibility="private", **gpu)
    correct.click(on_correct, inputs=[run], outputs=[link], api_name="correct_contact").then(
        lambda url: link_html(url, "Open the painter", "correct-anchor"), inputs=[link], outputs=[link_box],
        api_name="correct_link", api_visibility="private").then(
        None, inputs=[link], js=OPEN_JS, api_name="open_painter", api_visibility="private")


def affordance_tab(demo: AffordanceDemo, gpu: dict) -> None:
    gr.HTML(demo.notice(), elem_id="affordance-notice")
    with gr.Row():
        with gr.Column():
            image = gr.File(label="image", file_types=[".jpg", ".jpeg", ".png", ".webp", ".bmp"],
                            elem_id="affordance-image")
            preview = gr.Image(label="your image", interactive=False, elem_id="affordance-preview", height=260)
            names = list(builtin_object_names())
            choice = gr.Dropdown(names + [UPLOAD_CHOICE], value=names[0], label="object", elem_id="object-choice")
            upload = gr.File(label="or upload a mesh / point cloud (.obj .ply .off .stl .glb .npy .npz .txt)",
                             file_types=[".obj", ".ply", ".off", ".stl", ".glb", ".npy", ".npz", ".txt"],
                             elem_id="object-upload")
            label = gr.Dropdown(list(OBJECT_LABELS), value=builtin_object(names[0]).class_name, allow_custom_value=True,
                                label="object label", elem_id="object-label")
            affordance = gr.Dropdown(list(AFFORDANCES), value="sit", label="affordance", elem_id="affordance")
            with gr.Row():
                predict = gr.Button("Predict affordance" if not demo.missing_files() else
                                    "Predict affordance (no affordance checkpoint installed)", variant="primary",
                                    elem_id="predict-affordance", interactive=not demo.missing_files())
                paint = gr.Button("Paint instead", elem_id="paint-affordance")
        with gr.Column():
            viewer = gr.Model3D(label="affordance on the object", elem_id="affordance-3d")
            answer = gr.HTML(elem_id="affordance-answer-box")
            downloads = gr.File(label="downloads", file_count="multiple", elem_id="affordance-downloads")
            link = gr.Textbox(visible="hidden", elem_id="paint-url")
            link_box = gr.HTML(elem_id="paint-link")

    @user_errors
    def on_predict(image_value, choice_value, upload_value, label_value, affordance_value, progress=gr.Progress()):
        return demo.predict(image_value, choice_value, upload_value, label_value, affordance_value, progress)

    @user_errors
    def on_paint(image_value, choice_value, upload_value, label_value, affordance_value, request: gr.Request):
        return demo.paint_instead(image_value, choice_value, upload_value, label_value, affordance_value, request)

    @user_errors
    def on_choice(choice_value):
        return builtin_object(choice_value).class_name if choice_value != UPLOAD_CHOICE else gr.update()

    inputs = [image, choice, upload, label, affordance]
    predict.click(on_predict, inputs=inputs, outputs=[viewer, answer, downloads], api_name="predict_affordance", **gpu)
    paint.click(on_paint, inputs=inputs, outputs=[link], api_name="paint_affordance").then(
        lambda url: link_html(url, "Open the painter", "paint-anchor"), inputs=[link], outputs=[link_box],
        api_name="paint_link", api_visibility="private").then(
        None, inputs=[link], js=OPEN_JS, api_name="open_affordance_painter", api_visibility="private")
    choice.change(on_choice, inputs=[choice], outputs=[label], api_name="object_label_for")
    image.change(user_errors(lambda value: preview_image(demo.studio, value)), inputs=[image], outputs=[preview],
                 api_name="affordance_preview", api_visibility="private", **gpu)
