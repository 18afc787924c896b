"""The geometry preview page: the canonical body renders InteractVLM uses, its named parts, and the doctor report.

It is the studio's first page until the demo tabs land: everything on it is computed live.
"""
from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
import numpy as np

from engine import rll
from engine.assets import doctor_report
from engine.body import BodyModel, load_body
from engine.errors import InputError, MissingAssetError
from engine.render.shading import categorical_colours

COLOURINGS = ("normals (InteractVLM render)", "body parts")
MAX_RESOLUTION = 1024


class BodyShelf:
    """Bodies loaded once per process, by kind."""

    def __init__(self, models_dir: Path):
        self.models_dir = models_dir
        self._bodies: dict[str, BodyModel] = {}

    def get(self, kind: str) -> BodyModel:
        if kind not in self._bodies:
            self._bodies[kind] = load_body(kind, self.models_dir)
        return self._bodies[kind]


def _grid(images: np.ndarray) -> np.ndarray:
    return np.concatenate([np.concatenate(list(images[:2]), 1), np.concatenate(list(images[2:]), 1)], 0)


def _legend(body: BodyModel) -> str:
    items = []
    for index, name in enumerate(body.part_names):
        r, g, b = (int(255 * c) for c in categorical_colours([index])[0])
        count = int((body.part_labels == index).sum())
        items.append(f'<span style="color:rgb({r},{g},{b})">&#9632;</span> {html.escape(name)} ({count})')
    return f"<p><b>{html.escape(body.topology)}</b>: {body.num_vertices} vertices, {len(body.part_names)} parts</p><p>" \
           + " &nbsp; ".join(items) + "</p>"


def render_body(shelf: BodyShelf, kind: str, colouring: str, resolution) -> tuple[np.ndarray, str]:
    """Handler: the four body views as a 2 x 2 grid, and a legend."""
    if colouring not in COLOURINGS:
        raise InputError(f"colouring must be one of {COLOURINGS}")
    try:
        resolution = int(resolution)
    except (TypeError, ValueError) as error:
        raise InputError("resolution must be a whole number of pixels") from error
    if not 64 <= resolution <= MAX_RESOLUTION:
        raise InputError(f"resolution must be between 64 and {MAX_RESOLUTION} pixels, got {resolution}")
    body = shelf.get(kind)
    colours = categorical_colours(body.part_labels) if colouring == "body parts" else None
    views = rll.render_views(body.vitruvian_vertices(), body.faces, preset="body", resolution=resolution,
                             topology=body.topology, vertex_colours=colours)
    return _grid(views.images), _legend(body)


def build_preview(models_dir: Path) -> gr.Blocks:
    shelf = BodyShelf(models_dir)
    report = doctor_report(models_dir)

    def on_render(kind, colouring, resolution, progress=gr.Progress()):
        progress(0.1, desc="rendering four views")
        try:
            return render_body(shelf, kind, colouring, resolution)
        except (InputError, MissingAssetError) as error:
            raise gr.Error(str(error)) from error

    with gr.Blocks(title="Interaction Studio") as demo:
        gr.Markdown("# Interaction Studio\nThe canonical body renders behind InteractVLM's Render-Localize-Lift: "
                    "four views in the Vitruvian pose, with the pixel-to-vertex maps that lift 2D contact to 3D.")
        with gr.Row():
            kind = gr.Dropdown(list(report.available_bodies()), value="openbody", label="Body")
            colouring = gr.Radio(list(COLOURINGS), value=COLOURINGS[0], label="Colouring")
            resolution = gr.Slider(128, MAX_RESOLUTION, value=512, step=64, label="Resolution per view")
        button = gr.Button("Render views", variant="primary")
        image = gr.Image(label="topfront | bottomfront / topback | bottomback", type="numpy", format="png")
        legend = gr.HTML()
        with gr.Accordion("Model files (python app.py doctor)", open=False):
            gr.HTML(f"<pre>{html.escape(report.format())}</pre>")
        button.click(on_render, [kind, colouring, resolution], [image, legend], api_name="render_body")
        demo.load(on_render, [kind, colouring, resolution], [image, legend], api_name=False)
    return demo
