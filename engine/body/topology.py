"""Topology ids and conversions between them. Torch-free, so the annotation store can use it.

A topology id travels with every per-vertex array. Arrays of different topologies never mix
silently: conversion only goes through an explicit map (SMPL-H 6890 <-> SMPL-X 10475 through the
user's ``smpl_to_smplx.pkl``, key ``matrix`` of shape 10475 x 6890).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from engine.errors import InputError, MissingAssetError

OPENBODY_NUM_VERTICES = 10614
TOPOLOGY_VERTEX_COUNTS: dict[str, int] = {
    "smpl-6890": 6890,
    "smplh-6890": 6890,
    "smplx-10475": 10475,
    "openbody-v1": OPENBODY_NUM_VERTICES,
}
SMPL_TO_SMPLX_FILE = "body/smpl_to_smplx.pkl"
# The licensed file each SMPL-family topology loads from (accepted names, first preferred); the open body
# (openbody-v1) is built in. ``engine.body.model.SMPL_FAMILY`` reads its file lists from here.
BODY_FILES: dict[str, tuple[str, ...]] = {
    "smplx-10475": ("body/smplx/SMPLX_NEUTRAL.npz", "body/smplx/SMPLX_NEUTRAL.pkl"),
    "smplh-6890": ("body/smplh/SMPLH_NEUTRAL.pkl", "body/smplh/SMPLH_NEUTRAL.npz"),
    "smpl-6890": ("body/smpl/SMPL_NEUTRAL.pkl",),
}
# Best first: SMPL-H is the topology of DAMON and the InteractVLM contact release; the open body always works.
BODY_PREFERENCE = ("smplh-6890", "smplx-10475", "smpl-6890", "openbody-v1")
_SAME_VERTICES = {frozenset(("smpl-6890", "smplh-6890"))}  # SMPL-H's body is SMPL's mesh


def num_vertices(topology: str) -> int:
    if topology not in TOPOLOGY_VERTEX_COUNTS:
        raise InputError(f"unknown topology {topology!r}; known: {sorted(TOPOLOGY_VERTEX_COUNTS)}")
    return TOPOLOGY_VERTEX_COUNTS[topology]


def check_per_vertex(values, topology: str, *, name: str = "values") -> np.ndarray:
    """Return ``values`` as an array whose first axis matches the topology's vertex count."""
    array = np.asarray(values)
    expected = num_vertices(topology)
    if array.ndim == 0 or array.shape[0] != expected:
        found = "a scalar" if array.ndim == 0 else f"{array.shape[0]} rows"
        raise InputError(f"{name} has {found} but topology {topology} has {expected} vertices")
    return array


def check_vertex_ids(ids, topology: str, *, name: str = "vertex ids") -> np.ndarray:
    """Return unique sorted int64 ids, refusing any outside the topology's range."""
    array = np.asarray(ids)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{name} must be integers, got {array.dtype}")
    array = array.astype(np.int64).ravel()
    count = num_vertices(topology)
    if array.size and (array.min() < 0 or array.max() >= count):
        raise InputError(f"{name} must be in 0..{count - 1} for {topology}; got range [{array.min()}, {array.max()}]")
    return np.unique(array)


@dataclass(frozen=True)
class TopologyMap:
    """SMPL(-H) 6890 <-> SMPL-X 10475. ``matrix``: (10475, 6890) sparse, rows are SMPL-X vertices."""

    matrix: sp.csr_matrix

    @classmethod
    def from_pretrained(cls, models_dir: Path | str) -> "TopologyMap":
        from engine.body.files import load_pickle

        path = Path(models_dir) / SMPL_TO_SMPLX_FILE
        if not path.exists():
            raise MissingAssetError("SMPL to SMPL-X topology map", path,
                                    "Download smpl_to_smplx.pkl (SMPL-X model transfer files) and place it there.")
        data = load_pickle(path)
        if "matrix" not in data:
            raise InputError(f"{path} lacks the key 'matrix'; found {sorted(data)}")
        matrix = sp.csr_matrix(data["matrix"]) if sp.issparse(data["matrix"]) else sp.csr_matrix(np.asarray(data["matrix"]))
        if matrix.shape != (10475, 6890):
            raise InputError(f"{path}: 'matrix' must be 10475 x 6890, got {matrix.shape[0]} x {matrix.shape[1]}")
        return cls(matrix=matrix)

    def convert(self, values, source: str, target: str) -> np.ndarray:
        """Per-vertex values (V, ...) from ``source`` to ``target`` topology."""
        array = check_per_vertex(values, source)
        if source == target or frozenset((source, target)) in _SAME_VERTICES:
            return array.copy()
        flat = array.reshape(array.shape[0], -1).astype(np.float64)
        if source in ("smpl-6890", "smplh-6890") and target == "smplx-10475":
            out = self.matrix @ flat
        elif source == "smplx-10475" and target in ("smpl-6890", "smplh-6890"):
            transpose = self.matrix.T.tocsr()
            totals = np.asarray(transpose.sum(axis=1)).ravel()
            out = sp.diags(1.0 / np.where(totals > 0, totals, 1.0)) @ (transpose @ flat)
        else:
            raise InputError(f"no conversion from {source} to {target}; this map converts SMPL/SMPL-H <-> SMPL-X only")
        return np.asarray(out).reshape((out.shape[0],) + array.shape[1:])


def missing_body_file(topology: str, models_dir: Path | str) -> str | None:
    """None when ``topology``'s body can be shown from ``models_dir``; else the file (relative to the models
    dir) to install. Torch-free: only looks for the file, as the doctor does. Object topologies
    (``points-N``) need no body."""
    if topology.startswith("points-") or topology == "openbody-v1":
        return None
    num_vertices(topology)
    files = BODY_FILES[topology]
    return None if any((Path(models_dir) / relative).is_file() for relative in files) else files[0]


def installed_topologies(models_dir: Path | str) -> tuple[str, ...]:
    """Every body topology whose file is installed, best first (the open body always last)."""
    return tuple(topology for topology in BODY_PREFERENCE if missing_body_file(topology, models_dir) is None)


def best_installed_topology(models_dir: Path | str) -> str:
    """The default body for new tasks: the best one installed (``openbody-v1`` without licensed files)."""
    return installed_topologies(models_dir)[0]
