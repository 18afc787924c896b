"""Write the HOI tab's example inputs beside the example images: for each scene of ``make_examples.py``,
``hoi/<scene>/body.npz`` (the known posed body and the camera the image was rendered with),
``hoi/<scene>/mask.png`` (the object's visible pixels) and ``hoi/<scene>/contacts.npz`` (ground-truth
proximity within 2 cm on both meshes), and ``hoi/<scene>/scene.json`` (object name and label).

Run from the repository root:  .venv/bin/python studio/examples/make_hoi_examples.py
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_examples as examples  # noqa: E402
from engine.body import load_body  # noqa: E402
from engine.hoi.inputs import Intrinsics, project  # noqa: E402
from engine.hoi.synthetic import proximity  # noqa: E402
from engine.objects import builtin_object  # noqa: E402
from engine.render.cameras import FoVPerspectiveCamera  # noqa: E402
from engine.render.rasterizer import rasterize_meshes  # noqa: E402
from engine.render.silhouette import depth_map  # noqa: E402

OUTPUT = Path(__file__).resolve().parent / "hoi"
SOURCE = "example: ground-truth proximity (2 cm)"


def camera_of(scene: examples.Composition):
    """The example render's camera as OpenCV extrinsics (world -> camera) and intrinsics at SIZE."""
    parts = [examples.Part(scene.body_vertices, np.zeros((1, 3), int), np.zeros((1, 3)), np.ones(1)),
             examples.Part(scene.object_vertices, np.zeros((1, 3), int), np.zeros((1, 3)), np.ones(1))]
    target, dist = examples.framing(parts)
    size = (examples.SIZE, examples.SIZE)
    opencv = FoVPerspectiveCamera.look_at(dist, scene.elev, scene.azim, fov=examples.FOV, dtype=torch.float64).to_opencv(size)
    rotation, translation = opencv.R[0].numpy(), opencv.t[0].numpy()
    K = opencv.K[0].numpy()
    # The render moved the scene by -target before the camera: fold that into the translation.
    return rotation, translation - rotation @ np.asarray(target, dtype=np.float64), Intrinsics(K[0, 0], K[1, 1], K[0, 2], K[1, 2])


def visible_mask(body_cam, body_faces, object_cam, object_faces, camera, size) -> np.ndarray:
    body_depth = depth_map(project(torch.as_tensor(body_cam), camera)[None], torch.as_tensor(body_faces), size)
    fragments = rasterize_meshes(project(torch.as_tensor(object_cam), camera)[None], torch.as_tensor(object_faces), size)
    return (fragments.covered & (fragments.zbuf < body_depth))[0].numpy()


def write_example(name: str, scene: examples.Composition, faces: np.ndarray) -> None:
    folder = OUTPUT / name
    folder.mkdir(parents=True, exist_ok=True)
    rotation, translation, camera = camera_of(scene)
    to_camera = lambda points: np.asarray(points, dtype=np.float64) @ rotation.T + translation
    body_cam, object_cam = to_camera(scene.body_vertices), to_camera(scene.object_vertices)
    obj = builtin_object(scene.object_name)
    size = (examples.SIZE, examples.SIZE)
    np.savez_compressed(folder / "body.npz", vertices=scene.body_vertices.astype(np.float32), cam_R=rotation, cam_t=translation,
             focal=np.array([camera.fx, camera.fy]), principal_point=np.array([camera.cx, camera.cy]))
    mask = visible_mask(body_cam, faces, object_cam, obj.faces, camera, size)
    Image.fromarray((mask * 255).astype(np.uint8)).save(folder / "mask.png", optimize=True)
    np.savez_compressed(folder / "contacts.npz", human=proximity(body_cam, object_cam), object=proximity(object_cam, body_cam),
             topology=np.array("openbody-v1"), source=np.array(SOURCE))
    (folder / "scene.json").write_text(json.dumps({"object": scene.object_name, "label": obj.class_name,
                                                   "image": f"{name}.png"}, indent=1) + "\n")
    print(f"{folder}: mask {int(mask.sum())} px")


def main() -> None:
    body = load_body("openbody")
    for name, compose in examples.SCENES.items():
        write_example(name, compose(body), body.faces.numpy())


if __name__ == "__main__":
    main()
