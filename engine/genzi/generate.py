"""``python -m engine.genzi.generate``: GenZI over a batch of prompts, with tqdm.

    python -m engine.genzi.generate --scene living_room --prompt "sitting on the sofa reading" \\
        --point 0 0.45 -1.35 --out runs/genzi

``--scene`` is a built-in name (living_room, bedroom, stair_room) or a mesh file (``--up-axis z`` for
GenZI's Z-up data). ``--prompt`` may repeat; ``--prompts FILE`` reads one per line. Each prompt gets a
folder with the views, inpaintings, masks, keypoints, bodies (npz parameters, .ply and .obj) and
``metrics.json``; ``table.md`` holds the batch row in the layout of the paper's Table 1.
Errors a user can fix (bad scene, point, prompt, missing model folder) are printed in words, exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from engine.errors import InputError, MissingAssetError
from engine.genzi import inpaint, metrics, scenes
from engine.genzi.pipeline import GenziConfig, GenziOutput, GenziPipeline


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.genzi.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", required=True, help="built-in scene name or a mesh file")
    parser.add_argument("--up-axis", default="y", choices=scenes.UP_AXES, help="the mesh file's up axis")
    parser.add_argument("--prompt", action="append", default=[], help="what the person does (repeatable)")
    parser.add_argument("--prompts", type=Path, help="a text file with one prompt per line")
    parser.add_argument("--point", nargs=3, type=float, required=True, metavar=("X", "Y", "Z"))
    parser.add_argument("--negative", default="", help="extra negative prompt")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", default=None, help="models directory (default: $STUDIO_MODELS or models/)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return parser.parse_args(argv)


def _scene(args) -> scenes.Scene:
    if args.scene in scenes.builtin_scene_names() or not Path(args.scene).suffix:
        return scenes.builtin_scene(args.scene)
    return scenes.load_scene_file(args.scene, up_axis=args.up_axis)


def _prompts(args) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts is not None:
        if not args.prompts.is_file():
            raise InputError("the prompts file was not found")
        prompts += [line.strip() for line in args.prompts.read_text().splitlines() if line.strip()]
    if not prompts:
        raise InputError("give at least one --prompt (or --prompts FILE)")
    for prompt in prompts:
        inpaint.build_text(prompt, inpaint.InpaintConfig())  # empty prompts fail here, before any model loads
    return prompts


def build_pipeline(models, device, config: GenziConfig = GenziConfig()) -> GenziPipeline:
    """Load every component from the models dir; MissingAssetError names the first missing folder."""
    from engine.body import load_body
    from engine.fitting.vitpose import load_vitpose
    from engine.paths import models_dir

    from engine.fitting.priors import load_vposer

    root = models_dir(models)
    pipe = inpaint.load_inpainting_pipeline(root, device)
    pose = load_vitpose(root, device)
    clip = metrics.ClipScorer.from_pretrained(models=root, device=device)
    try:  # SMPL-X with VPoser when their files are there; otherwise the open body and its prior
        body = load_body("smplx", root, device)
    except MissingAssetError:
        body = load_body("openbody", root, device)
    try:
        vposer = load_vposer(root, device) if body.topology != "openbody-v1" else None
    except MissingAssetError:
        vposer = None
    return GenziPipeline(pipe, pose, clip, body, vposer, config)


def save_output(output: GenziOutput, folder: Path, body_faces: np.ndarray, scene: scenes.Scene | None = None) -> None:
    """Write one prompt's results. Meshes are in the scene file's own frame (Z-up data stays Z-up); the
    npz parameters are in our Y-up world, the frame the body model poses them in."""
    folder.mkdir(parents=True, exist_ok=True)
    for view, image in enumerate(output.renders):
        Image.fromarray(image).save(folder / f"view{view:03d}.png")
    for stage, results in enumerate(output.inpaintings):
        for index, image in enumerate(results.images):
            Image.fromarray(image).save(folder / f"inpaint{stage}_{index:03d}.png")
            Image.fromarray((results.masks[index] * 255).astype(np.uint8)).save(folder / f"mask{stage}_{index:03d}.png")
    for number, body in enumerate(output.bodies):
        stem = folder / f"body{number:02d}_stage{body.stage}"
        np.savez(stem.with_suffix(".npz"), **{name: np.asarray(value) for name, value in body.fit.body_params().items()},
                 view_ids=np.asarray(body.view_ids), clip=body.clip)
        vertices = scene.to_source_frame(body.fit.vertices) if scene is not None else body.fit.vertices
        mesh = trimesh.Trimesh(vertices, body_faces, process=False)
        mesh.export(stem.with_suffix(".ply"))
        mesh.export(stem.with_suffix(".obj"))
    metrics.write_prompt_json(output.metrics, folder / "metrics.json")
    (folder / "failures.json").write_text(json.dumps(list(output.failures), indent=2))
    (folder / "joints.json").write_text(json.dumps(dict(output.joint_sources), indent=2))


def main(argv=None) -> int:
    from tqdm import tqdm

    from engine.runtime import pick_device

    args = parse(argv)
    try:
        scene = _scene(args)
        prompts = _prompts(args)
        scenes.check_point(scene, args.point)
        device = pick_device(args.device)
        pipeline = build_pipeline(args.models, device)
        rows = []
        with tqdm(total=len(prompts), desc="prompts") as bar:
            for number, prompt in enumerate(prompts):
                output = pipeline(scene, prompt, args.point, negative=args.negative,
                                  progress=lambda fraction, text: bar.set_postfix_str(text, refresh=True))
                save_output(output, args.out / f"prompt{number:03d}", pipeline.body.faces.cpu().numpy(), scene)
                rows.append(output.metrics)
                bar.update(1)
        table = metrics.format_table([metrics.batch_row(rows)])
        (args.out / "table.md").write_text(table + "\n")
        print(table)
        return 0
    except (InputError, MissingAssetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
