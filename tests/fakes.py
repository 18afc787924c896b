"""Synthetic stand-ins for licensed files, written with the official key names and shapes.

The geometry is ours: a capsule-like body of exactly the right vertex count, made by splitting the
edges of an icosphere, with 1-hot skinning to joints placed along a human-like skeleton. Values
that carry no geometry (shape and pose correctives, hand PCA) are seeded random numbers.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import trimesh

from engine.body.model import SMPL_FAMILY
from engine.body.openbody import rest_joints
from engine.body.topology import TOPOLOGY_VERTEX_COUNTS


def mesh_with_vertex_count(count: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed genus-0 mesh with exactly ``count`` vertices: an icosphere plus edge splits."""
    sphere = trimesh.creation.icosphere(subdivisions=5 if count > 10242 else 4)
    if len(sphere.vertices) > count:
        raise ValueError(f"cannot shrink an icosphere to {count} vertices")
    vertices = np.zeros((count, 3))
    vertices[: len(sphere.vertices)] = sphere.vertices
    faces = sphere.faces.copy()
    for middle in range(len(sphere.vertices), count):
        a, b = faces[(middle * 97) % len(faces), :2]
        vertices[middle] = (vertices[a] + vertices[b]) / 2
        faces = _split_edge(faces, a, b, middle)
    return vertices / np.linalg.norm(vertices, axis=1, keepdims=True), faces.astype(np.int64)


def _split_edge(faces: np.ndarray, a: int, b: int, middle: int) -> np.ndarray:
    """Split edge ab of its two faces, keeping their winding."""
    new_faces = []
    for index in np.nonzero((faces == a).any(1) & (faces == b).any(1))[0]:
        face = faces[index]
        k = next(k for k in range(3) if {face[k], face[(k + 1) % 3]} == {a, b})
        u, v, w = face[k], face[(k + 1) % 3], face[(k + 2) % 3]
        faces[index] = (u, middle, w)
        new_faces.append((middle, v, w))
    return np.concatenate([faces, np.asarray(new_faces, dtype=faces.dtype)])


def body_like(vertices: np.ndarray) -> np.ndarray:
    """Stretch a unit sphere into a 1.7 m tall, human-sized ellipsoid in the SMPL frame."""
    return vertices * np.array([0.25, 0.85, 0.15]) + np.array([0.0, -0.31, 0.0])


def write_fake_smpl_family(models_dir: Path, kind: str, *, seed: int = 0, fmt: str = "npz") -> Path:
    spec = SMPL_FAMILY[kind]
    rng = np.random.default_rng(seed)
    num_vertices, num_joints = TOPOLOGY_VERTEX_COUNTS[spec.topology], spec.num_joints
    sphere, faces = mesh_with_vertex_count(num_vertices)
    template = body_like(sphere)
    joints = np.concatenate([rest_joints() * np.array([0.3, 1.0, 0.5]),
                             np.zeros((num_joints - 22, 3)) + np.array([0.0, 0.4, 0.0])])
    nearest = np.argmin(((template[:, None] - joints[None, :22]) ** 2).sum(-1), axis=1)
    weights = np.zeros((num_vertices, num_joints), dtype=np.float32)
    weights[np.arange(num_vertices), nearest] = 1.0
    regressor = np.zeros((num_joints, num_vertices), dtype=np.float32)
    for joint in range(num_joints):
        closest = np.argsort(((template - joints[joint]) ** 2).sum(-1))[:8]
        regressor[joint, closest] = 1.0 / 8
    parents = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]
                       + [20 if j < 22 + (num_joints - 22) // 2 else 21 for j in range(22, num_joints)])
    if kind == "smplx":  # jaw and eyes hang off the head before the hands
        parents[22:25] = 15
        parents[25:40], parents[40:55] = 20, 21
    data = {
        "v_template": template.astype(np.float32), "f": faces.astype(np.uint32),
        "shapedirs": (rng.standard_normal((num_vertices, 3, 400 if kind == "smplx" else 10)) * 1e-3).astype(np.float32),
        "posedirs": (rng.standard_normal((num_vertices, 3, (num_joints - 1) * 9)) * 1e-3).astype(np.float32),
        "J_regressor": regressor, "weights": weights,
        "kintree_table": np.stack([np.where(parents < 0, 4294967295, parents), np.arange(num_joints)]).astype(np.int64),
    }
    if kind in ("smplx", "smplh"):
        for side in "lr":
            data[f"hands_components{side}"] = rng.standard_normal((45, 45)).astype(np.float32)
            data[f"hands_mean{side}"] = (rng.standard_normal(45) * 0.1).astype(np.float32)
    if kind == "smplx":
        data.update(lmk_faces_idx=rng.integers(0, len(faces), 51).astype(np.int64),
                    lmk_bary_coords=np.full((51, 3), 1 / 3, dtype=np.float32),
                    dynamic_lmk_faces_idx=rng.integers(0, len(faces), (79, 17)).astype(np.int64),
                    dynamic_lmk_bary_coords=np.full((79, 17, 3), 1 / 3, dtype=np.float32))
    path = models_dir / next(f for f in spec.files if f.endswith(fmt))
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "npz":
        np.savez(path, **data)
    else:
        path.write_bytes(pickle.dumps(data, protocol=2))
    return path


def write_compact_segmentation(models_dir: Path, topology: str, vertices: np.ndarray, parts: int = 20) -> Path:
    """A segmentation JSON of ``parts`` spatially compact patches (seeded k-means on the vertices)."""
    import json

    from scipy.cluster.vq import kmeans2

    _, labels = kmeans2(np.asarray(vertices, dtype=np.float64), parts, seed=0, minit="++")
    path = models_dir / "body" / "parts" / f"{topology}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({f"patch{k}": np.nonzero(labels == k)[0].tolist() for k in range(parts)}))
    return path


CONTACT_OBJECTS = {"chair": ("hips", "left_thigh", "right_thigh"), "cup": ("right_hand",),
                   "skateboard": ("left_foot", "right_foot")}


def write_contact_dataset(root: Path, body, count: int = 12, seed: int = 0) -> Path:
    """A DAMON-style npz (our export's keys) on ``body``'s topology: ``count`` noisy solid-colour PNGs, one
    per object of ``CONTACT_OBJECTS`` in turn, whose contact is exactly that object's parts."""
    import json

    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = np.array([[230, 40, 40], [40, 230, 40], [40, 40, 230]])
    names, labels, objectwise = [], [], []
    for index in range(count):
        label = list(CONTACT_OBJECTS)[index % len(CONTACT_OBJECTS)]
        pixels = colours[index % len(colours)][None, None] + rng.normal(0, 20, (48, 64, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"img{index}.png")
        ids = np.concatenate([body.part_vertex_ids(part) for part in CONTACT_OBJECTS[label]])
        contact = np.zeros(body.num_vertices, np.uint8)
        contact[ids] = 1
        names.append(f"img{index}.png")
        labels.append(contact)
        objectwise.append(json.dumps({label: sorted(int(i) for i in ids)}).encode())
    path = root / "train.npz"
    np.savez(path, imgname=np.array(names), contact_label=np.stack(labels), topology=np.array(body.topology),
             contact_label_objectwise_json=np.array(objectwise, dtype=bytes))
    return path
