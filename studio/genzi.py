"""The GenZI tab of the demo: a scene, a point picked on it, a prompt -> 3D people placed in the scene.

Flow (each step its own endpoint, each with an explicit ``api_name``):
  genzi_load_scene   a built-in room or an uploaded mesh (``accept_upload``, size checked before parsing)
                     -> the scene in the 3D picker (``studio/web/scene_picker.js``), a suggested point
  genzi_check_point  the point, clicked in the picker or typed "x, y, z" (metres, Y up), checked to lie
                     on or near the surface (``engine.genzi.scenes.check_point``)
  genzi_views        GenZI's view selection at the point and a gallery of the chosen views; when no view
                     passes, the message names a point that works (GPU lane)
  genzi_generate     inpainting (stages 0 and 1), 2D pose, lifting and metrics (GPU lane); only when every
                     model folder is installed, otherwise the button is disabled and the notice names them

The picker gets the scene as a small binary mesh from ``/studio/mesh/scene/<token>.bin`` (``add_scene_routes``):
a little-endian uint32 header (vertex count, face count), float32 vertices (V, 3), uint32 faces (F, 3). The
token is random per load and only scenes loaded in the last ``SceneShelf.max_scenes`` loads are served.
"""
from __future__ import annotations

import html
import json
import re
import secrets
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import Response

from engine.errors import InputError
from engine.fitting.vitpose import VITPOSE_DIR, VITPOSE_FILES
from engine.genzi import scenes, views
from engine.genzi.inpaint import SD2_INPAINTING_FOLDER
from engine.genzi.metrics import CLIP_FOLDER
from studio.context import Studio, user_errors
from studio.painter import STATIC_URL
from studio.uploads import accept_upload

UPLOAD_CHOICE = "my upload"
GENZI_MODEL = "genzi"
MAX_PROMPT_CHARS = 500
BODY_COLOURS = ("#d9825b", "#4363d8", "#3cb44b", "#911eb4", "#f58231", "#42d4f4", "#f032e6", "#9a6324")
SCENE_GREY = "#c8c8c8"
KEYPOINT_COLOUR = (230, 25, 75)
MASK_TINT = np.array([66, 99, 216], dtype=np.float32)
SCENE_LABELS = {"living_room": "living room (sofa, table)", "bedroom": "bedroom (bed, nightstand)",
                "stair_room": "chairs and stairs"}
PREVIEW_SIZE = 256  # gallery renders; the inpainting model gets its own 512 px renders
MAX_POINT_TEXT = 200
SCENE_URL = "/studio/mesh/scene"
TOKEN = re.compile(r"[0-9a-f]{32}")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
POINT_TEXT = re.compile(rf"\s*[\[(]?\s*({_NUMBER})\s*[,;\s]\s*({_NUMBER})\s*[,;\s]\s*({_NUMBER})\s*[\])]?\s*")
EXCEPTION_NAME = re.compile(r" \((?:[A-Za-z_][\w.]*)?(?:Error|Exception|Warning)\)")


@dataclass(frozen=True)
class ModelFolder:
    """A model folder the generation needs: what it is, its place under the models dir, files that must exist."""

    what: str
    folder: str
    files: tuple[str, ...]

    def missing(self, models_dir: Path) -> bool:
        return not all((Path(models_dir) / self.folder / name).is_file() for name in self.files)


MODEL_FOLDERS: tuple[ModelFolder, ...] = (
    ModelFolder("Stable Diffusion 2 inpainting (diffusers folder)", SD2_INPAINTING_FOLDER, ("model_index.json",)),
    ModelFolder("ViTPose 2D pose (transformers folder)", VITPOSE_DIR, VITPOSE_FILES),
    ModelFolder("CLIP ViT-B/32 (transformers folder)", CLIP_FOLDER, ("config.json",)),
)


@dataclass(frozen=True)
class GenziTabConfig:
    """Settings of the tab. views: GenZI's camera search (the "Show views" step); preview_size: gallery
    renders (pixels); pipeline: ``engine.genzi.pipeline.GenziConfig`` for generation (None: GenZI's values)."""

    views: views.ViewConfig = field(default_factory=views.ViewConfig)
    preview_size: int = PREVIEW_SIZE
    pipeline: object | None = None


DEFAULT_CONFIG = GenziTabConfig()


@dataclass(frozen=True)
class LoadedScene:
    """A scene loaded for one visitor. token: the picker's mesh URL key; source: "built-in: NAME" or
    "upload: FILE"; suggested: (3,) a point where a person fits (built-ins) or None."""

    token: str
    scene: scenes.Scene
    source: str
    suggested: tuple[float, float, float] | None


class SceneShelf:
    """The scenes the picker may fetch, by random token: the newest ``max_scenes`` loads, at most
    ``max_faces`` faces together (the oldest go first)."""

    def __init__(self, max_scenes: int = 32, max_faces: int = 8_000_000):
        self.max_scenes, self.max_faces = max_scenes, max_faces
        self._scenes: OrderedDict[str, bytes] = OrderedDict()
        self._faces: dict[str, int] = {}
        self._lock = threading.Lock()

    def put(self, scene: scenes.Scene) -> str:
        token = secrets.token_hex(16)
        data = scene_binary(scene)
        with self._lock:
            self._scenes[token], self._faces[token] = data, len(scene.faces)
            while len(self._scenes) > self.max_scenes or \
                    (len(self._scenes) > 1 and sum(self._faces.values()) > self.max_faces):
                oldest, _ = self._scenes.popitem(last=False)
                del self._faces[oldest]
        return token

    def get(self, token: str) -> bytes | None:
        with self._lock:
            return self._scenes.get(token)


_SHELVES: "weakref.WeakKeyDictionary[Studio, SceneShelf]" = weakref.WeakKeyDictionary()
_SHELVES_LOCK = threading.Lock()


def scene_shelf(studio: Studio) -> SceneShelf:
    """The one shelf of a studio (its tab and its mesh route share it)."""
    with _SHELVES_LOCK:
        return _SHELVES.setdefault(studio, SceneShelf())


def scene_binary(scene: scenes.Scene) -> bytes:
    """The picker's mesh format (module docstring): header, float32 vertices, uint32 faces."""
    header = np.array([len(scene.vertices), len(scene.faces)], dtype="<u4").tobytes()
    return header + scene.vertices.astype("<f4").tobytes() + scene.faces.astype("<u4").tobytes()


def add_scene_routes(app: FastAPI, studio: Studio) -> None:
    @app.get(SCENE_URL + "/{token}.bin")
    def scene_mesh(token: str) -> Response:
        data = scene_shelf(studio).get(token) if TOKEN.fullmatch(token) else None
        if data is None:
            raise HTTPException(404, "no such scene; load it again in the GenZI tab")
        return Response(data, media_type="application/octet-stream", headers={"Cache-Control": "private, max-age=3600"})


def parse_point(text) -> tuple[float, float, float]:
    """"x, y, z" (commas, semicolons or spaces; optional brackets) as three finite floats, else InputError."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("give the point: click the scene, or type x, y, z in metres (Y up), e.g. 0, 0.45, -1.35")
    if len(text) > MAX_POINT_TEXT:
        raise InputError(f"the point text is over {MAX_POINT_TEXT} characters; type three numbers x, y, z")
    match = POINT_TEXT.fullmatch(text)
    if match is None:
        raise InputError(f"the point must be three numbers x, y, z in metres (Y up), e.g. 0, 0.45, -1.35; "
                         f"got {text.strip()[:40]!r}")
    values = tuple(float(group) for group in match.groups())
    if not all(np.isfinite(values)):
        raise InputError("the point's coordinates must be finite numbers")
    return values


def point_text(point) -> str:
    return ", ".join(f"{float(value):.3f}" for value in point)


def visitor_words(error: InputError) -> InputError:
    """The engine's message without a parser's exception name (visitors read words only)."""
    return InputError(EXCEPTION_NAME.sub("", str(error)))


class GenziDemo:
    """Handlers of the GenZI tab (thin: parse, call ``engine.genzi``, format)."""

    def __init__(self, studio: Studio, config: GenziTabConfig | None = None):
        self.studio = studio
        self.config = config if config is not None else DEFAULT_CONFIG
        self.shelf = scene_shelf(studio)
        self.register_model()

    # --- models ---------------------------------------------------------------------------------

    def register_model(self) -> None:
        """The GenZI pipeline as an engine model (lazy loading, the memory budget, one GPU lane)."""
        from engine.runtime import ModelSpec

        if GENZI_MODEL in self.studio.engine.names():
            return
        config = self.config.pipeline

        def load(context):
            from engine.genzi.generate import build_pipeline

            return build_pipeline(context.models_dir, context.device, *([config] if config is not None else []))

        requires = tuple(Path(folder.folder) / name for folder in MODEL_FOLDERS for name in folder.files)
        self.studio.engine.register(ModelSpec(GENZI_MODEL, load, "GenZI: people placed in a scene", requires=requires))

    def missing_models(self) -> tuple[ModelFolder, ...]:
        return tuple(folder for folder in MODEL_FOLDERS if folder.missing(self.studio.settings.models_dir))

    def notice(self) -> str:
        """Words for visitors: which model folders are missing (by their place under the models folder)."""
        missing = self.missing_models()
        if not missing:
            return ""
        items = "".join(f"<li>{html.escape(folder.what)}: the folder <code>{html.escape(folder.folder)}/</code> "
                        "in the models folder</li>" for folder in missing)
        return ("<div id='genzi-missing'><b>Generation is off on this server.</b> Placing people needs these "
                f"models, which are not installed:<ul>{items}</ul>You can still load a scene, pick a point and see "
                "the views GenZI would inpaint. The administrator can run <code>python app.py doctor</code>.</div>")

    def generate_reason(self) -> str:
        missing = self.missing_models()
        return "" if not missing else "generation needs " + ", ".join(folder.what for folder in missing)

    # --- scene and point ------------------------------------------------------------------------

    def load_scene(self, choice: str, upload, up_axis: str) -> LoadedScene:
        if choice == UPLOAD_CHOICE:
            path = accept_upload(self.studio, upload, what="the scene file")
            limit = min(self.studio.settings.max_upload_bytes, scenes.MAX_SCENE_BYTES)
            size = path.stat().st_size
            if size > limit:  # refused by its size, before a byte is parsed
                raise InputError(f"the scene file has {size:,} bytes; at most {limit:,} are accepted "
                                 "(decimate the mesh)")
            if up_axis not in scenes.UP_AXES:
                raise InputError(f"the up axis must be one of {', '.join(scenes.UP_AXES)}")
            try:
                scene = scenes.load_scene_file(path, path.name, up_axis=up_axis)
            except InputError as error:
                raise visitor_words(error) from None
            loaded = LoadedScene("", scene, f"upload: {path.name}", None)
        else:
            name = scene_name(choice)
            loaded = LoadedScene("", scenes.builtin_scene(name), f"built-in: {name}", scenes.BUILTIN_POINTS[name])
        return LoadedScene(self.shelf.put(loaded.scene), loaded.scene, loaded.source, loaded.suggested)

    def check_point(self, loaded: LoadedScene | None, text) -> scenes.ScenePoint:
        if loaded is None:
            raise InputError("load a scene first (a built-in room or your mesh)")
        return scenes.check_point(loaded.scene, parse_point(text))

    def select_views(self, loaded: LoadedScene | None, text, progress=None) -> tuple[views.ViewSelection, list]:
        """The chosen views and the gallery ((image, caption) pairs, best first)."""
        point = self.check_point(loaded, text)
        if progress is not None:
            progress(0.1, desc="measuring how much of the surface around the point each camera sees")
        selection = views.select_views(loaded.scene, point, self.config.views)
        if progress is not None:
            progress(0.6, desc=f"rendering the {len(selection.ratios)} selected views")
        size = self.config.preview_size
        images = views.render_views(loaded.scene, selection.cameras, size)
        gallery = [(image, f"view {index + 1}: {ratio:.0%} of the patch visible")
                   for index, (image, ratio) in enumerate(zip(images, selection.ratios))]
        return selection, gallery


    # --- generation -----------------------------------------------------------------------------

    def generate(self, loaded: LoadedScene | None, text, prompt, progress) -> "Generation":
        """Run GenZI on the GPU lane; never fakes a result: without every model folder it refuses."""
        point = self.check_point(loaded, text)
        prompt = checked_prompt(prompt)
        if self.missing_models():
            raise InputError(self.generate_reason() + "; they are not installed on this server")
        engine = self.studio.engine
        with engine.use(GENZI_MODEL, progress=lambda f, desc: progress(0.05 * f, desc=f"loading models: {desc}")) as pipe:
            output = pipe(loaded.scene, prompt, point.point,
                          progress=lambda f, desc: progress(0.05 + 0.85 * f, desc=desc))
            faces, topology = np.asarray(pipe.body.faces.cpu()), str(pipe.body.topology)
        progress(0.92, desc="writing the bodies, the scene GLB and the downloads")
        return self.keep(loaded, point, prompt, output, faces, topology)

    def keep(self, loaded: LoadedScene, point, prompt: str, output, faces: np.ndarray, topology: str) -> "Generation":
        """Write the downloads and keep the result as a run (``annotations.runs``)."""
        from annotations.runs import save_run
        from engine.genzi.generate import save_output

        folder = self.studio.output_folder()
        save_output(output, folder / "genzi", faces, loaded.scene)  # meshes in the scene file's own frame
        glb = folder / "scene_and_bodies.glb"
        glb.write_bytes(scene_with_bodies_glb(loaded.scene, [body.fit.vertices for body in output.bodies], faces))
        downloads = [glb, folder / "genzi" / "metrics.json", folder / "genzi" / "joints.json"] + sorted(
            path for path in (folder / "genzi").iterdir() if path.suffix in (".npz", ".ply", ".obj"))
        summary = output.metrics.to_json()
        summary = {key: summary[key] for key in ("clip", "non_collision", "contact", "clip_mean",
                                                 "non_collision_mean", "contact_mean")}
        summary["failures"] = list(output.failures)
        summary["joint_sources"] = dict(output.joint_sources)
        run = save_run(self.studio.store, kind="genzi", method="genzi",
                       inputs={"scene": loaded.source, "scene_hash": loaded.scene.content_hash, "prompt": prompt,
                               "point": [round(float(v), 4) for v in point.point],
                               "models": [folder_spec.folder for folder_spec in MODEL_FOLDERS], "body": topology},
                       files={path.name: path for path in downloads}, summary=summary,
                       group_key=group_key(loaded.scene, point.point, prompt))
        return Generation(run.id, output, str(glb), [str(path) for path in downloads])


@dataclass(frozen=True)
class Generation:
    """One generation as the tab shows it: the run id, the pipeline's output, the GLB and the downloads."""

    run_id: str
    output: object
    glb: str
    downloads: list[str]


def checked_prompt(prompt) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty; describe what the person does, e.g. 'sitting on the sofa reading'")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"the prompt is over {MAX_PROMPT_CHARS} characters; the text encoder reads 77 tokens")
    return prompt.strip()


def group_key(scene: scenes.Scene, point, prompt: str) -> str:
    """Runs from the same scene, point and prompt share a group (a study compares them)."""
    import hashlib

    text = json.dumps([scene.content_hash, [round(float(v), 3) for v in point], prompt.strip().lower()])
    return hashlib.sha256(text.encode()).hexdigest()


def scene_with_bodies_glb(scene: scenes.Scene, bodies: list[np.ndarray], faces: np.ndarray) -> bytes:
    """One GLB: the grey scene and each body in its own colour, in our Y-up frame (glTF's too; the .ply and
    .obj downloads are in the scene file's own frame)."""
    import trimesh

    from studio.exports import hex_to_rgb

    def coloured(vertices, triangles, colour):
        rgba = np.append(np.round(hex_to_rgb(colour) * 255), 255).astype(np.uint8)
        return trimesh.Trimesh(vertices, triangles, vertex_colors=np.tile(rgba, (len(vertices), 1)), process=False)

    world = trimesh.Scene()
    world.add_geometry(coloured(scene.vertices, scene.faces, SCENE_GREY), node_name="scene", geom_name="scene")
    for number, vertices in enumerate(bodies):
        world.add_geometry(coloured(np.asarray(vertices), faces, BODY_COLOURS[number % len(BODY_COLOURS)]),
                           node_name=f"body{number:02d}", geom_name=f"body{number:02d}")
    return world.export(file_type="glb")


def inpainting_gallery(output) -> list:
    """(image, caption) per inpainting: the image, its mask tinted blue, its accepted keypoints in red."""
    from PIL import Image, ImageDraw

    items = []
    num_views = len(output.renders)
    for stage_log, (result, keypoints) in enumerate(zip(output.inpaintings, output.keypoints)):
        stage = 0 if stage_log == 0 else 1
        for number, (image, mask) in enumerate(zip(result.images, result.masks)):
            tinted = image.astype(np.float32)
            tinted[mask] = 0.6 * tinted[mask] + 0.4 * MASK_TINT
            picture = Image.fromarray(np.clip(tinted, 0, 255).astype(np.uint8))
            index, view = divmod(number, num_views)
            found = keypoints[index][view] if index < len(keypoints) else None
            if found is not None:
                draw = ImageDraw.Draw(picture)
                radius = max(2, image.shape[0] // 128)
                for (x, y), confidence in zip(found.xy, found.confidence):
                    if confidence > 0:
                        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=KEYPOINT_COLOUR)
            state = "pose accepted" if found is not None else "pose rejected"
            items.append((np.asarray(picture), f"stage {stage}, set {index}, view {view + 1}: {state}"))
    return items


def metrics_rows(output) -> list[list]:
    return [[number, body.stage, len(body.view_ids), round(body.clip, 4), round(body.non_collision, 4),
             round(body.contact, 4)] for number, body in enumerate(output.bodies)]


METRIC_HEADERS = ["body", "stage", "views used", "CLIP score", "non-collision", "contact"]


def generation_html(generation: Generation) -> str:
    output = generation.output
    failures = "".join(f"<li>{html.escape(text)}</li>" for text in output.failures)
    not_from_vitpose = [f"{name} ({text})" for name, text in output.joint_sources.items() if not text.startswith("ViTPose")]
    joints = (f"<p id='genzi-joint-sources'>Joints not taken from a ViTPose keypoint: "
              f"{html.escape('; '.join(not_from_vitpose))}.</p>" if not_from_vitpose else "")
    return (f"<div id='genzi-result'><p>{len(output.bodies)} bodies placed for "
            f"<i>{html.escape(output.prompt)}</i> (run <code>{generation.run_id}</code>).</p>" + joints
            + (f"<p>Not lifted:</p><ul>{failures}</ul>" if failures else "") + "</div>")


def scene_name(choice) -> str:
    names = {label: name for name, label in SCENE_LABELS.items()}
    name = names.get(choice, choice)
    if name not in scenes.builtin_scene_names():
        raise InputError(f"choose a built-in scene ({', '.join(SCENE_LABELS.values())}) or '{UPLOAD_CHOICE}'")
    return name


def picker_payload(loaded: LoadedScene) -> str:
    return json.dumps({"url": f"{SCENE_URL}/{loaded.token}.bin", "name": loaded.scene.name,
                       "point": list(loaded.suggested) if loaded.suggested is not None else None})


def scene_summary(loaded: LoadedScene) -> str:
    low, high = loaded.scene.vertices.min(0), loaded.scene.vertices.max(0)
    size = " x ".join(f"{value:.2f}" for value in high - low)
    return (f"<p id='genzi-scene-info'><b>{html.escape(loaded.scene.name)}</b> ({html.escape(loaded.source)}): "
            f"{len(loaded.scene.vertices):,} vertices, {len(loaded.scene.faces):,} faces, {size} m (Y up). "
            "Click the scene to pick the point, or type it.</p>")


def point_summary(point: scenes.ScenePoint) -> str:
    return (f"<p id='genzi-point-info'>The point is {point.distance * 100:.1f} cm from the surface; cameras look at "
            f"({point_text(point.nearest)}), surface normal ({point_text(point.normal)}).</p>")


# --- the 3D picker glue (the painter's pattern: gr.HTML + js_on_load, hidden boxes, a hidden trigger) ---

PICKER_MOUNT_JS = f"""
const box = element.querySelector('.studio-scene-picker');
window.studioScenePickerReady = import('{STATIC_URL}/scene_picker.js').then((module) => {{
  const picker = module.createScenePicker(box);
  window.studioScenePicker = picker;
  box.addEventListener('scene-pick', () => {{
    const trigger = document.querySelector('#genzi-picked button') || document.getElementById('genzi-picked');
    if (trigger) trigger.click();
  }});
  return picker;
}});
"""

PICKER_LOAD_JS = """(payload) => {
  if (payload && window.studioScenePickerReady) window.studioScenePickerReady.then((p) => p.load(JSON.parse(payload)));
  return [];
}"""

# Replaces the first input (the point box) with the point the visitor clicked.
PICKER_READ_JS = """(...args) => {
  const p = window.studioScenePicker;
  const picked = p && p.picked();
  if (picked) args[0] = picked.map((v) => v.toFixed(3)).join(', ');
  return args;
}"""

PICKER_MARK_JS = """(text) => {
  const p = window.studioScenePicker;
  if (p && text) {
    const values = text.split(/[\\s,;\\[\\]()]+/).filter((s) => s.length).map(Number);
    if (values.length === 3 && values.every(Number.isFinite)) p.mark(values);
  }
  return [];
}"""


def genzi_tab(demo: GenziDemo, gpu: dict) -> None:
    loaded_state = gr.State(None)
    gr.HTML(demo.notice(), elem_id="genzi-notice")
    with gr.Row():
        with gr.Column(scale=1):
            choices = [SCENE_LABELS[name] for name in scenes.builtin_scene_names()] + [UPLOAD_CHOICE]
            choice = gr.Dropdown(choices, value=choices[0], label="scene", elem_id="genzi-scene-choice")
            upload = gr.File(label=f"or upload a scene mesh ({' '.join(scenes.SCENE_EXTENSIONS)})",
                             file_types=list(scenes.SCENE_EXTENSIONS), elem_id="genzi-scene-upload")
            up_axis = gr.Radio(list(scenes.UP_AXES), value="y", label="up axis of the uploaded file",
                               elem_id="genzi-up-axis")
            load = gr.Button("Load scene", elem_id="genzi-load")
            point = gr.Textbox(label="the point: click the scene, or type x, y, z (metres, Y up)",
                               elem_id="genzi-point")
            show_views = gr.Button("Show views", elem_id="genzi-show-views")
            prompt = gr.Textbox(label="prompt (what the person does)", value="sitting on the sofa reading",
                                elem_id="genzi-prompt")
            reason = demo.generate_reason()
            generate = gr.Button("Generate" if not reason else "Generate (off: model folders missing, see above)",
                                 variant="primary", interactive=not reason, elem_id="genzi-generate")
        with gr.Column(scale=2):
            gr.HTML('<div class="studio-scene-picker" id="studio-scene-picker"></div>', js_on_load=PICKER_MOUNT_JS,
                    elem_id="genzi-picker-host", min_height=420)
            info = gr.HTML(elem_id="genzi-info")
    gallery = gr.Gallery(label="selected views", columns=4, elem_id="genzi-views")
    with gr.Row():
        model = gr.Model3D(label="the bodies in the scene", elem_id="genzi-3d", clear_color=(0.93, 0.94, 0.96, 1.0))
        with gr.Column():
            result = gr.HTML(elem_id="genzi-result-box")
            table = gr.Dataframe(headers=METRIC_HEADERS, label="metrics per body", interactive=False,
                                 elem_id="genzi-metrics")
            downloads = gr.File(label="downloads: scene + bodies GLB, metrics, parameters (npz), bodies (.ply .obj)",
                                file_count="multiple", elem_id="genzi-downloads")
    inpaintings = gr.Gallery(label="inpaintings with their masks (blue) and keypoints (red)", columns=4,
                             elem_id="genzi-inpaintings")
    payload = gr.Textbox(visible="hidden", elem_id="genzi-scene-payload")
    picked = gr.Button("picked", visible="hidden", elem_id="genzi-picked")

    @user_errors
    def on_load(choice_value, upload_value, axis_value):
        loaded = demo.load_scene(choice_value, upload_value, axis_value)
        suggested = point_text(loaded.suggested) if loaded.suggested is not None else ""
        return loaded, picker_payload(loaded), scene_summary(loaded), suggested, []

    @user_errors
    def on_point(text, loaded):
        checked = demo.check_point(loaded, text)
        return point_text(checked.point), point_summary(checked)

    @user_errors
    def on_views(loaded, text, progress=gr.Progress()):
        selection, images = demo.select_views(loaded, text, progress)
        return images, point_summary(selection.point) + (
            f"<p id='genzi-views-info'>{len(images)} views pass (more than {demo.config.views.min_ratio:.0%} of the "
            f"{demo.config.views.patch_radius:g} m patch visible and facing the camera).</p>")

    @user_errors
    def on_generate(loaded, text, prompt_value, progress=gr.Progress()):
        generation = demo.generate(loaded, text, prompt_value, progress)
        return (generation.glb, generation_html(generation), metrics_rows(generation.output), generation.downloads,
                inpainting_gallery(generation.output))

    load.click(on_load, inputs=[choice, upload, up_axis], outputs=[loaded_state, payload, info, point, gallery],
               api_name="genzi_load_scene")
    payload.change(None, inputs=[payload], js=PICKER_LOAD_JS, api_name="genzi_picker_load", api_visibility="private")
    picked.click(on_point, inputs=[point, loaded_state], outputs=[point, info], js=PICKER_READ_JS,
                 api_name="genzi_picked", api_visibility="private")
    point.submit(on_point, inputs=[point, loaded_state], outputs=[point, info], api_name="genzi_check_point")
    point.change(None, inputs=[point], js=PICKER_MARK_JS, api_name="genzi_mark_point", api_visibility="private")
    show_views.click(on_views, inputs=[loaded_state, point], outputs=[gallery, info], api_name="genzi_views", **gpu)
    generate.click(on_generate, inputs=[loaded_state, point, prompt],
                   outputs=[model, result, table, downloads, inpaintings], api_name="genzi_generate", **gpu)
