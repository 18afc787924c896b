"""The HOI tab: one image -> a body and an object placed together in 3D, held by their contacts.

Flow: image -> body (pick a source) -> object (pick or upload) -> mask (draw, box for SAM, or label for
Grounding DINO + SAM) -> contacts (InteractVLM, or painted in the painter) -> Fit. Each fit and its
silhouette-only baseline are kept as runs (``annotations.runs``) that share the image's hash as their
group key, so a perceptual study can pair them; each keeps the input photo (the study item's reference
image). Refit reuses the body, the object and the contacts already worked out for the same inputs
(``HoiSession``), so changing the mask or the contacts redoes only the fit.

Without any model file the built-in examples work end to end: their known body, shipped mask and
painted or shipped contacts (or the category prior, labelled as a baseline).
"""
from __future__ import annotations

import hashlib
import html
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from annotations.files import CheckedImage, check_image
from annotations.runs import input_photo_name, save_run
from engine.contact.vocabulary import OBJECT_LABELS, resolve_object_label
from engine.errors import InputError, MissingAssetError
from engine.hoi import outputs
from engine.hoi.fit import BASELINE_METHOD, FitConfig, HoiFit, fit_object
from engine.hoi.inputs import (BodyInput, Contacts, body_from_keypoints, check_mask, load_body_file, load_contacts_file,
                               load_mask_file)
from engine.objects import ObjectGeometry, builtin_object, builtin_object_names, load_object_file
from studio.context import GPU_LANE, Studio, mesh_json, user_errors
from studio.uploads import accept_upload
from studio.painter import READ_JS, painter_component, payload_json, read_painting

EXAMPLES = Path(__file__).resolve().parent / "examples"
HOI_EXAMPLES = EXAMPLES / "hoi"
BODY_EXAMPLE, BODY_FILE, BODY_KEYPOINTS = "example: known body", "body file (parameters or posed mesh)", "fitted from keypoints (ViTPose)"
MASK_EXAMPLE, MASK_DRAWN, MASK_BOX, MASK_LABEL = ("example: shipped mask", "drawn", "box -> SAM",
                                                  "label -> Grounding DINO + SAM")
CONTACT_EXAMPLE, CONTACT_PAINTED, CONTACT_PRIOR = ("example: shipped contacts", "painted",
                                                   "category prior (baseline) + painted object")
CONTACT_JOINT, CONTACT_SPLIT = "InteractVLM joint model", "InteractVLM hcontact + oafford"
UPLOAD_CHOICE = "my upload"
FIT_CONFIG = FitConfig()  # the release's numbers; at the image's own size
HUMAN_LAYER, OBJECT_LAYER = "human contact", "object contact"
MODEL_NAMES = {"vitpose": "ViTPose (models/vitpose/)", "sam-box": "SAM (models/sam-hf/)", "grounded-sam": "Grounding DINO + SAM (models/grounding-dino/, models/sam-hf/)",
               "interactvlm-joint": "the InteractVLM joint model (models/interactvlm/joint/)",
               "interactvlm-hcontact": "the InteractVLM hcontact model (models/interactvlm/hcontact/)",
               "interactvlm-oafford": "the InteractVLM oafford model (models/interactvlm/oafford/)"}


def accept_file(studio: Studio, value, what: str) -> Path:
    """Every file input of the tab passes here: only this server's uploads and its own examples."""
    return accept_upload(studio, value, what=f"the {what}")


@dataclass(frozen=True)
class HoiSession:
    """What a session worked out, reused by Refit: each entry is (key, value) and is redone when its key changes."""

    body: tuple | None = None
    object: tuple | None = None
    contacts: tuple | None = None
    image_hash: str | None = None


def example_names() -> list[str]:
    return sorted(path.name for path in HOI_EXAMPLES.iterdir() if (path / "scene.json").is_file()) if HOI_EXAMPLES.is_dir() else []


def example_scene(name: str) -> dict:
    if name not in example_names():
        raise InputError(f"unknown example {str(name)[:40]!r}; the examples are {example_names()}")
    return json.loads((HOI_EXAMPLES / name / "scene.json").read_text())


class HoiDemo:
    """The tab's handlers (thin: parse, call the engine, format)."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self._bodies: dict[str, object] = {}

    # ---- inputs ----------------------------------------------------------------------------------------

    def missing(self, name: str) -> str | None:
        """None when the registered model's files exist, else its name in words."""
        status = {entry.name: entry for entry in self.studio.engine.status().models}
        if name in status and status[name].available:
            return None
        return MODEL_NAMES.get(name, name)

    def image(self, value) -> tuple[np.ndarray, CheckedImage, str]:
        """(pixels, the checked upload, its file name)."""
        path = accept_file(self.studio, value, "image")
        checked = check_image(path.read_bytes(), path.name, self.studio.store.config.image_limits)
        from engine.contact.data import load_image_rgb

        return load_image_rgb(checked.data), checked, path.name

    def available_bodies(self) -> tuple[str, ...]:
        from engine.assets import doctor_report

        return doctor_report(self.studio.settings.models_dir).available_bodies()

    def body_model(self, kind: str):
        from engine.body import load_body

        if kind not in self._bodies:
            self._bodies[kind] = load_body(kind, self.studio.settings.models_dir)
        return self._bodies[kind]

    def body(self, source: str, upload, example: str | None, image: np.ndarray | None = None, progress=None) -> BodyInput:
        if source == BODY_EXAMPLE:
            name = example or ""
            example_scene(name)
            return replace(load_body_file(HOI_EXAMPLES / name / "body.npz", "body.npz", self.body_model),
                           source=f"example: known body ({name})")
        if source == BODY_FILE:
            path = accept_file(self.studio, upload, "body file")
            return load_body_file(path, path.name, self.body_model)
        if source == BODY_KEYPOINTS:
            if image is None:
                raise InputError("upload the image first: the body is fitted to its keypoints")
            self.require("vitpose")
            kind = "smplx" if "smplx" in self.available_bodies() else "openbody"
            with self.studio.engine.use("vitpose") as estimator:
                return body_from_keypoints(image, estimator, self.body_model(kind), progress=progress)
        raise InputError(f"choose a body source: {BODY_EXAMPLE}, {BODY_FILE} or {BODY_KEYPOINTS}")

    def object(self, choice: str, upload, label: str | None) -> ObjectGeometry:
        if choice == UPLOAD_CHOICE:
            path = accept_file(self.studio, upload, "object mesh")
            obj = load_object_file(path, path.name, class_name=label or "object")
        else:
            obj = builtin_object(choice)
        if not obj.is_mesh:
            raise InputError(f"{obj.name!r} is a point cloud; the fit renders the object's silhouette and needs a mesh "
                             "with faces (.obj, .ply, .off, .stl, .glb)")
        return obj

    def mask(self, source: str, editor, box_text: str, label: str, image: np.ndarray, example: str | None) -> tuple[np.ndarray, str]:
        size = image.shape[:2]
        if source == MASK_EXAMPLE:
            example_scene(example or "")
            return load_mask_file(HOI_EXAMPLES / example / "mask.png", size), f"example: shipped mask ({example})"
        if source == MASK_DRAWN:
            return check_mask(drawn_layer(editor, size), size), "drawn in the tab"
        if source == MASK_BOX:
            box = parse_box(box_text) if box_text and box_text.strip() else box_of(drawn_layer(editor, size))
            self.require("sam-box")
            with self.studio.engine.use("sam-box") as sam:
                result = sam.segment(image, box)
            return check_mask(result.mask, size), f"box {tuple(round(v) for v in result.box)} refined by {result.source}"
        if source == MASK_LABEL:
            self.require("grounded-sam")
            with self.studio.engine.use("grounded-sam") as segmenter:
                result = segmenter.segment(image, label)
            return check_mask(result.mask, size), f"label {label!r} by {result.source} (box score {result.score:.2f})"
        raise InputError(f"choose a mask source: {MASK_DRAWN}, {MASK_BOX}, {MASK_LABEL} or {MASK_EXAMPLE}")

    def require(self, name: str) -> None:
        missing = self.missing(name)
        if missing:
            raise InputError(f"this needs {missing}, which is not installed; "
                             "draw the mask, paint the contacts or use an example instead")

    def contacts(self, source: str, data: bytes, body: BodyInput, obj: ObjectGeometry, label: str,
                 painted: dict, example: str | None) -> Contacts:
        if source == CONTACT_EXAMPLE:
            example_scene(example or "")
            return load_contacts_file(HOI_EXAMPLES / example / "contacts.npz", human_topology=body.topology,
                                      human_source="example: ground-truth proximity (2 cm)",
                                      object_source="example: ground-truth proximity (2 cm)")
        if source == CONTACT_PAINTED:
            return Contacts(painted_values(painted, HUMAN_LAYER, body.topology, len(body.vertices)), body.topology,
                            painted_values(painted, OBJECT_LAYER, obj.topology, len(obj.vertices)), "painted", "painted")
        if source == CONTACT_PRIOR:
            with self.studio.engine.use("category-prior") as prior:
                human = prior.predict_human_contact(data, label)
            return Contacts(human.probabilities, human.topology,
                            painted_values(painted, OBJECT_LAYER, obj.topology, len(obj.vertices)), human.source, "painted")
        if source in (CONTACT_JOINT, CONTACT_SPLIT):
            human_model, object_model = (("interactvlm-joint",) * 2 if source == CONTACT_JOINT
                                         else ("interactvlm-hcontact", "interactvlm-oafford"))
            for name in {human_model, object_model}:
                self.require(name)
            with self.studio.engine.use(human_model) as model:
                human = model.predict_human_contact(data, label)
            with self.studio.engine.use(object_model) as model:
                values = model.predict_object_affordance(data, obj.vertices, obj.faces, object_label=label)
            return Contacts(human.probabilities, human.topology, values.values, human.source, values.source)
        raise InputError(f"choose a contact source: {CONTACT_EXAMPLE}, {CONTACT_PAINTED}, {CONTACT_PRIOR}, "
                         f"{CONTACT_JOINT} or {CONTACT_SPLIT}")

    # ---- the fit -------------------------------------------------------------------------------------

    def fit(self, session: HoiSession | None, values: dict, progress) -> tuple[HoiSession, dict]:
        """Resolve the inputs (reusing the session's), fit with contacts and the baseline, keep both as runs."""
        session = session or HoiSession()
        progress(0.0, desc="checking the image")
        image, photo, image_name = self.image(values["image"])
        data, image_hash = photo.data, photo.sha256
        example = values.get("example") or None
        body_key = (values["body_source"], _file_key(values.get("body_file")), example,
                    image_hash if values["body_source"] == BODY_KEYPOINTS else None)
        if session.body is None or session.body[0] != body_key:
            progress(0.05, desc="loading the body")
            fitting = lambda fraction, text: progress(0.05 + 0.05 * fraction, desc=f"body from keypoints: {text}")
            session = replace(session, body=(body_key, self.body(values["body_source"], values.get("body_file"), example,
                                                                 image, fitting)))
        body = session.body[1]
        object_key = (values["object_choice"], _file_key(values.get("object_file")), values.get("label"))
        if session.object is None or session.object[0] != object_key:
            session = replace(session, object=(object_key, self.object(values["object_choice"], values.get("object_file"),
                                                                       values.get("label"))))
        obj = session.object[1]
        label = resolve_object_label(values.get("label") or obj.class_name)
        progress(0.1, desc="the object mask")
        mask, mask_source = self.mask(values["mask_source"], values.get("editor"), values.get("box") or "", label,
                                      image, example)
        contact_key = (values["contact_source"], image_hash, body_key, object_key, label,
                       json.dumps(values.get("painted") or {}, sort_keys=True))
        if session.contacts is None or session.contacts[0] != contact_key:
            progress(0.15, desc="the contacts")
            session = replace(session, contacts=(contact_key, self.contacts(
                values["contact_source"], data, body, obj, label, values.get("painted") or {}, example)))
        contacts = session.contacts[1]
        session = replace(session, image_hash=image_hash)
        sources = {"image": image_name, "body": body.source, "object": f"{obj.name} ({label})", "mask": mask_source,
                   "human contacts": contacts.human_source, "object contacts": contacts.object_source}
        config, device = FIT_CONFIG, self.studio.engine.device
        stage = lambda low, high: (lambda fraction, text: progress(low + (high - low) * fraction, desc=text))
        fitted = fit_object(body, obj, mask, contacts, config, sources=sources, progress=stage(0.2, 0.7), device=device)
        baseline = None
        if values.get("baseline", True):
            baseline = fit_object(body, obj, mask, None, config, progress=stage(0.7, 0.9), device=device,
                                  sources={**sources, "human contacts": "none", "object contacts": "none"})
        progress(0.9, desc="writing the 3D model, the overlay, the animation and the downloads")
        return session, self.results(image, photo, fitted, baseline, contacts)

    def results(self, image, photo: CheckedImage, fitted: HoiFit, baseline: HoiFit | None, contacts: Contacts) -> dict:
        """Write the downloads and keep the fit and its baseline as runs, each with the input photo (a study's
        reference image), grouped by the photo's hash."""
        folder, image_hash = self.studio.output_folder(), photo.sha256
        kept_photo = {input_photo_name(photo.suffix): photo.data}
        files = {**outputs.obj_files(fitted), "fit.npz": outputs.fit_npz(fitted),
                 "fit.glb": outputs.glb_bytes(fitted, contacts.human, contacts.object),
                 "overlay.png": _png(outputs.overlay(image, fitted)), "fit.gif": outputs.animation_gif(image, fitted)}
        for name, content in files.items():
            (folder / name).write_bytes(content)
        run = save_run(self.studio.store, kind="hoi", method=f"interactvlm-hoi ({contacts.human_source} / {contacts.object_source})"[:200],
                       inputs=dict(fitted.sources), files={**files, **kept_photo}, group_key=image_hash,
                       summary=summary(fitted))
        baseline_run = None
        if baseline is not None:
            baseline_files = {**outputs.obj_files(baseline), "fit.npz": outputs.fit_npz(baseline),
                              "fit.glb": outputs.glb_bytes(baseline), "overlay.png": _png(outputs.overlay(image, baseline))}
            baseline_run = save_run(self.studio.store, kind="hoi", method=f"baseline: {BASELINE_METHOD}",
                                    inputs=dict(baseline.sources), files={**baseline_files, **kept_photo},
                                    group_key=image_hash, summary=summary(baseline))
        downloads = [str(folder / name) for name in ("combined.obj", "human.obj", "object.obj", "fit.npz", "fit.glb")]
        return {"glb": str(folder / "fit.glb"), "overlay": str(folder / "overlay.png"), "gif": str(folder / "fit.gif"),
                "downloads": downloads, "report": report_html(fitted, baseline, run.id, baseline_run and baseline_run.id)}


def summary(fit: HoiFit) -> dict:
    return {"method": fit.method, "iou": round(fit.iou, 4), "final_energy": round(float(fit.losses["total"][-1]), 6)
            if len(fit.losses["total"]) else None, "stage_seconds": {k: round(v, 3) for k, v in fit.stage_seconds.items()},
            "warnings": list(fit.warnings)}


def report_html(fitted: HoiFit, baseline: HoiFit | None, run_id: str, baseline_id: str | None) -> str:
    rows = "".join(f"<li><b>{html.escape(name)}</b>: {html.escape(source)}</li>" for name, source in fitted.sources.items())
    stages = ", ".join(f"{html.escape(name)} {seconds:.1f} s" for name, seconds in fitted.stage_seconds.items())
    warnings = "".join(f"<p class='hoi-warning'><b>Note:</b> {html.escape(text)}</p>" for text in fitted.warnings)
    text = (f"<div id='hoi-report'><p>Fitted with <b>{html.escape(fitted.method)}</b>: silhouette IoU "
            f"<b>{fitted.iou:.3f}</b> (run <code>{run_id}</code>). Stages: {stages}.</p>{warnings}<ul>{rows}</ul>")
    if baseline is not None:
        text += (f"<p>Baseline <b>{html.escape(BASELINE_METHOD)}</b>: IoU {baseline.iou:.3f}, object "
                 f"{np.linalg.norm(baseline.t - fitted.t) * 100:.1f} cm from the contact fit "
                 f"(run <code>{baseline_id}</code>, same group).</p>")
    return text + "</div>"


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _file_key(value) -> str | None:
    if not value:
        return None
    path = Path(value if isinstance(value, str) else getattr(value, "name", str(value)))
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else str(path)


def drawn_layer(editor, size) -> np.ndarray:
    """(H, W) bool of what the user drew in the ImageEditor's layers (any painted pixel)."""
    if not isinstance(editor, dict) or not editor.get("layers"):
        raise InputError("draw the object's mask (or a box around it) on the image first")
    drawn = np.zeros(size, dtype=bool)
    for layer in editor["layers"]:
        array = np.asarray(Image.open(layer) if isinstance(layer, str) else layer)
        if array.shape[:2] != tuple(size):
            raise InputError(f"the drawing is {array.shape[1]} x {array.shape[0]} but the image is {size[1]} x {size[0]}")
        alpha = array[..., 3] if array.ndim == 3 and array.shape[2] == 4 else array.reshape(*size, -1).max(-1)
        drawn |= alpha > 0
    return drawn


def box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise InputError("draw a box (or a rough outline) around the object for SAM")
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


def parse_box(text: str) -> tuple[float, float, float, float]:
    try:
        values = [float(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise InputError("a box is four numbers: x0, y0, x1, y1 in pixels") from None
    if len(values) != 4:
        raise InputError("a box is four numbers: x0, y0, x1, y1 in pixels")
    return tuple(values)


def painted_values(painted: dict, layer: str, topology: str, count: int) -> np.ndarray:
    """(count,) float32 1 on the painted vertices of ``layer``; InputError when that layer was not painted."""
    if layer not in (painted or {}) or painted[layer][0] != topology:
        raise InputError(f"paint the {layer} first (open it in the painter, paint, then press 'Keep the painting')")
    values = np.zeros(count, dtype=np.float32)
    values[np.asarray(painted[layer][1], dtype=np.int64)] = 1.0
    return values


def painter_payload(studio: Studio, demo: HoiDemo, target: str, values: dict) -> str:
    """Load the body (Vitruvian pose, the painter's usual view) or the object into the painter."""
    if target == HUMAN_LAYER:
        body = demo.body(values["body_source"], values.get("body_file"), values.get("example") or None)
        studio.body_mesh_json(body.topology)
        return payload_json(mesh_url=f"/studio/mesh/body/{body.topology}.json", kind="human_contact",
                            topology=body.topology, task_id=None, labels=[HUMAN_LAYER])
    obj = demo.object(values["object_choice"], values.get("object_file"), values.get("label"))
    mesh = json.dumps(mesh_json(obj.topology, obj.vertices, obj.faces))
    url = "data:application/json;base64," + __import__("base64").b64encode(mesh.encode()).decode()
    return payload_json(mesh_url=url, kind="object_affordance", topology=obj.topology, task_id=None, labels=[OBJECT_LAYER])


def build_hoi_tab(studio: Studio, gpu: dict) -> None:
    """The tab's components and events (called inside ``gr.Tab``)."""
    demo = HoiDemo(studio)
    session, painted = gr.State(None), gr.State({})
    names = example_names()
    gr.Markdown("Place the object against the body in 3D from one image (InteractVLM's fit): the object's pose is fitted to "
                "its mask, anchored on the body by the contacts. A silhouette-only baseline is fitted beside it.")
    with gr.Row():
        with gr.Column():
            image = gr.File(label="1. image", file_types=[".jpg", ".jpeg", ".png", ".webp", ".bmp"], elem_id="hoi-image")
            example = gr.Dropdown(names, value=None, label="or an example (known body, shipped mask and contacts)",
                                  elem_id="hoi-example")
            body_source = gr.Radio([BODY_EXAMPLE, BODY_FILE, BODY_KEYPOINTS], value=BODY_EXAMPLE, label="2. body",
                                   elem_id="hoi-body-source")
            body_file = gr.File(label="body parameters (.npz .json .pkl) or a posed body mesh (.obj .ply)",
                                file_types=[".npz", ".json", ".pkl", ".obj", ".ply"], elem_id="hoi-body-file")
            object_choice = gr.Dropdown(list(builtin_object_names()) + [UPLOAD_CHOICE], value="chair", label="3. object",
                                        elem_id="hoi-object")
            object_file = gr.File(label="or upload a mesh (.obj .ply .off .stl .glb)",
                                  file_types=[".obj", ".ply", ".off", ".stl", ".glb"], elem_id="hoi-object-file")
            label = gr.Dropdown(list(OBJECT_LABELS), value="chair", allow_custom_value=True, label="object label",
                                elem_id="hoi-label")
        with gr.Column():
            mask_source = gr.Radio([MASK_EXAMPLE, MASK_DRAWN, MASK_BOX, MASK_LABEL], value=MASK_EXAMPLE,
                                   label="4. object mask", elem_id="hoi-mask-source")
            editor = gr.ImageEditor(label="draw the object (or a box around it for SAM)", type="numpy",
                                    elem_id="hoi-editor", brush=gr.Brush(colors=["#ff0000"]))
            box = gr.Textbox(label="or a box for SAM: x0, y0, x1, y1", elem_id="hoi-box")
            contact_source = gr.Radio([CONTACT_EXAMPLE, CONTACT_PAINTED, CONTACT_PRIOR, CONTACT_JOINT, CONTACT_SPLIT],
                                      value=CONTACT_EXAMPLE, label="5. contacts", elem_id="hoi-contact-source")
            missing = [words for name, words in MODEL_NAMES.items() if demo.missing(name)]
            gr.HTML("<p id='hoi-missing'>Not installed: " + "; ".join(html.escape(m) for m in missing)
                    + ". The examples, drawn masks and painted contacts work without them.</p>" if missing else "")
    with gr.Accordion("paint contacts", open=False):
        with gr.Row():
            paint_human = gr.Button("Paint on the body", elem_id="hoi-paint-body")
            paint_object = gr.Button("Paint on the object", elem_id="hoi-paint-object")
            keep = gr.Button("Keep the painting", elem_id="hoi-keep-painting")
        painted_text = gr.HTML(elem_id="hoi-painted")
        _, payload, painting, _ = painter_component()
    with gr.Row():
        fit = gr.Button("Fit", variant="primary", elem_id="hoi-fit")
        refit = gr.Button("Refit (keeps body, object and contacts)", elem_id="hoi-refit")
        baseline = gr.Checkbox(True, label="also fit the baseline: silhouette only (no contacts)", elem_id="hoi-baseline")
    with gr.Row():
        viewer = gr.Model3D(label="body and object (contacts in red)", elem_id="hoi-3d")
        overlay = gr.Image(label="the fit over the image", elem_id="hoi-overlay")
        animation = gr.Image(label="the optimisation", elem_id="hoi-animation")
    report = gr.HTML(elem_id="hoi-report-box")
    downloads = gr.File(label="downloads: combined, human and object OBJ, fit.npz, fit.glb", file_count="multiple",
                        elem_id="hoi-downloads")

    fields = [image, example, body_source, body_file, object_choice, object_file, label, mask_source, editor, box,
              contact_source, baseline]
    keys = ["image", "example", "body_source", "body_file", "object_choice", "object_file", "label", "mask_source",
            "editor", "box", "contact_source", "baseline"]

    @user_errors
    def on_fit(state, painted_state, *args, progress=gr.Progress()):
        values = dict(zip(keys, args), painted=painted_state)
        new_state, result = demo.fit(state, values, progress)
        return new_state, result["glb"], result["overlay"], result["gif"], result["report"], result["downloads"]

    @user_errors
    def on_refit(state, painted_state, *args, progress=gr.Progress()):
        if state is None:
            raise InputError("fit once first; Refit then keeps the body, the object and the contacts")
        return on_fit.__wrapped__(state, painted_state, *args, progress=progress)

    @user_errors
    def on_example(name):
        scene = example_scene(name)
        picture = str(EXAMPLES / scene["image"])
        return picture, scene["object"], scene["label"], {"background": picture, "layers": [], "composite": picture}

    @user_errors
    def on_image(value):
        if not value:
            return gr.update()
        path = accept_file(studio, value, "image")
        return {"background": str(path), "layers": [], "composite": str(path)}

    @user_errors
    def on_paint(target, *args):
        return painter_payload(studio, demo, target, dict(zip(keys, args)))

    @user_errors
    def on_keep(text, painted_state, *args):
        values = dict(zip(keys, args))
        state = json.loads(text) if text else {}
        layer = next(iter(state.get("layers", {})), None)
        if layer == HUMAN_LAYER:
            body = demo.body(values["body_source"], values.get("body_file"), values.get("example") or None)
            ids = read_painting(text, (HUMAN_LAYER,), body.topology).layers[HUMAN_LAYER]
            topology = body.topology
        elif layer == OBJECT_LAYER:
            obj = demo.object(values["object_choice"], values.get("object_file"), values.get("label"))
            ids = read_painting(text, (OBJECT_LAYER,), obj.topology, len(obj.vertices)).layers[OBJECT_LAYER]
            topology = obj.topology
        else:
            raise InputError("open the body or the object in the painter and paint first")
        kept = {**(painted_state or {}), layer: (topology, ids.tolist())}
        counts = ", ".join(f"{name}: {len(value[1])} vertices" for name, value in kept.items())
        return kept, f"<p id='hoi-painted-counts'>kept: {html.escape(counts)}</p>"

    outputs_list = [session, viewer, overlay, animation, report, downloads]
    fit.click(on_fit, inputs=[session, painted, *fields], outputs=outputs_list, api_name="hoi_fit", **gpu)
    refit.click(on_refit, inputs=[session, painted, *fields], outputs=outputs_list, api_name="hoi_refit", **gpu)
    example.change(on_example, inputs=[example], outputs=[image, object_choice, label, editor], api_name="hoi_example")
    image.upload(on_image, inputs=[image], outputs=[editor], api_name="hoi_image")
    human_target, object_target = gr.State(HUMAN_LAYER), gr.State(OBJECT_LAYER)
    paint_human.click(on_paint, inputs=[human_target, *fields], outputs=[payload], api_name="hoi_paint_body")
    paint_object.click(on_paint, inputs=[object_target, *fields], outputs=[payload], api_name="hoi_paint_object")
    keep.click(on_keep, inputs=[painting, painted, *fields], outputs=[painted, painted_text], js=READ_JS,
               api_name="hoi_keep_painting")
