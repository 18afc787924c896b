"""``python -m engine.hoi.fit``: fit objects to images in batches, with tqdm.

    python -m engine.hoi.fit --image photo.png --body body.npz --object chair --mask mask.png \\
        --contacts contacts.npz --out results/
    python -m engine.hoi.fit --image images/ --body bodies/ --object objects/ --mask masks/ \\
        --contacts contacts/ --out results/ --baseline

Each of --image, --body, --mask, --contacts (and --object, unless it names a built-in) is a file or a
folder. With folders, items pair by file stem: ``images/a.png`` with ``bodies/a.npz``, ``masks/a.png``,
``contacts/a.npz`` and ``objects/a.obj``. Each item writes ``<out>/<stem>/``: ``combined.obj``,
``human.obj``, ``object.obj``, ``fit.glb``, ``overlay.png``, ``fit.gif`` and ``fit.npz`` (see
``engine.hoi.outputs``); with --baseline the silhouette-only fit beside it under ``baseline/``.
Without --contacts, only the baseline runs (it needs none). Bad items are reported and skipped.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InputError, MissingAssetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class Item:
    stem: str
    image: Path
    body: Path
    object: str
    mask: Path
    contacts: Path | None


def _match(folder_or_file: str | None, stem: str, suffixes) -> Path | None:
    if folder_or_file is None:
        return None
    path = Path(folder_or_file)
    if not path.is_dir():
        return path
    for suffix in suffixes:
        if (path / f"{stem}{suffix}").is_file():
            return path / f"{stem}{suffix}"
    raise InputError(f"no file for {stem!r} in {path} (looked for {', '.join(suffixes)})")


def items(args) -> list[Item]:
    images = sorted(p for p in Path(args.image).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
        if Path(args.image).is_dir() else [Path(args.image)]
    if not images:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {args.image}")
    out = []
    for image in images:
        stem = image.stem
        obj = args.object if not Path(args.object).is_dir() else str(_match(args.object, stem, (".obj", ".ply", ".glb", ".stl", ".off")))
        out.append(Item(stem, image, _match(args.body, stem, (".npz", ".json", ".pkl", ".obj", ".ply")), obj,
                        _match(args.mask, stem, (".png", ".npy", ".jpg")),
                        _match(args.contacts, stem, (".npz",))))
    return out


def run_item(item: Item, args, config, load_body_model) -> list[str]:
    """Fit one item and write its files; returns the written folder(s)."""
    import io

    from PIL import Image

    from engine.contact.data import load_image_rgb
    from engine.hoi import outputs
    from engine.hoi.fit import fit_object
    from engine.hoi.inputs import load_body_file, load_contacts_file, load_mask_file
    from engine.objects import BUILTIN_OBJECTS, builtin_object, load_object_file

    image = load_image_rgb(item.image)
    body = load_body_file(item.body, item.body.name, load_body_model)
    obj = builtin_object(item.object) if item.object in BUILTIN_OBJECTS else \
        load_object_file(item.object, Path(item.object).name, class_name=args.object_label or "object")
    mask = load_mask_file(item.mask, image.shape[:2])
    sources = {"image": item.image.name, "body": body.source, "object": obj.name, "mask": f"file ({item.mask.name})"}
    runs = []
    if item.contacts is not None:
        contacts = load_contacts_file(item.contacts, human_topology=body.topology,
                                      human_source=f"file ({item.contacts.name})", object_source=f"file ({item.contacts.name})")
        runs.append(("", contacts, {**sources, "human contacts": contacts.human_source,
                                    "object contacts": contacts.object_source}))
    if args.baseline or item.contacts is None:
        runs.append(("baseline" if item.contacts is not None else "", None, {**sources, "contacts": "none (baseline)"}))
    written = []
    for sub, contacts, run_sources in runs:
        fit = fit_object(body, obj, mask, contacts, config, sources=run_sources, device=args.device)
        folder = Path(args.out) / item.stem / sub
        folder.mkdir(parents=True, exist_ok=True)
        files = outputs.obj_files(fit)
        files["fit.glb"] = outputs.glb_bytes(fit, None if contacts is None else contacts.human,
                                             None if contacts is None else contacts.object)
        files["fit.npz"] = outputs.fit_npz(fit)
        files["fit.gif"] = outputs.animation_gif(image, fit)
        buffer = io.BytesIO()
        Image.fromarray(outputs.overlay(image, fit)).save(buffer, format="PNG")
        files["overlay.png"] = buffer.getvalue()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        for warning in fit.warnings:
            print(f"{item.stem}: {warning}", file=sys.stderr)
        written.append(str(folder))
    return written


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.hoi.fit", description=__doc__.split("\n\n")[0])
    p.add_argument("--image", required=True, help="an image or a folder of images")
    p.add_argument("--body", required=True, help="body parameter file(s) or posed body mesh(es); see engine.hoi.inputs")
    p.add_argument("--object", required=True, help="a built-in object name, a mesh file, or a folder of meshes")
    p.add_argument("--object-label", default=None, help="object label for uploaded meshes (e.g. chair)")
    p.add_argument("--mask", required=True, help="object mask(s): PNG (non-black = object) or .npy")
    p.add_argument("--contacts", default=None, help="contacts npz ('human' and 'object' arrays); omit for the baseline only")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--baseline", action="store_true", help="also run the silhouette-only baseline")
    p.add_argument("--iterations", type=int, default=250)
    p.add_argument("--render-size", type=int, default=None, help="longest side of the fit's renders (default: the image's)")
    p.add_argument("--models", default=None, help="models directory (SMPL-X etc.; default $STUDIO_MODELS or models/)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    return p


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from engine.body import load_body
    from engine.hoi.fit import FitConfig
    from engine.paths import models_dir

    args = parser().parse_args(argv)
    root = models_dir(args.models)
    bodies: dict[str, object] = {}
    load_body_model = lambda kind: bodies.setdefault(kind, load_body(kind, root))
    try:
        config = FitConfig(iterations=args.iterations, render_size=args.render_size)
        batch = items(args)
    except (InputError, MissingAssetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failures = 0
    for item in tqdm(batch, desc="HOI fits", unit="image"):
        try:
            for folder in run_item(item, args, config, load_body_model):
                tqdm.write(f"{item.stem}: wrote {folder}")
        except (InputError, MissingAssetError) as error:
            failures += 1
            tqdm.write(f"{item.stem}: skipped: {error}")
    return 1 if failures == len(batch) else 0
