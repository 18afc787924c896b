"""Safe loading of the licensed body files (npz and the official pickles) into plain numpy arrays.

The official SMPL / SMPL-H pickles hold chumpy arrays and scipy sparse matrices. We never run
``pickle.load`` on them: a restricted unpickler admits numpy arrays, scipy sparse matrices and
chumpy's ``Ch`` (read back as the array in its ``x`` field), and refuses every other class.
"""
from __future__ import annotations

import copyreg
import pickle
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from engine.errors import InputError

MAX_MODEL_FILE_BYTES = 2 * 1024 ** 3


class _ChumpyArray:
    """Stands in for ``chumpy.ch.Ch`` while unpickling; ``value`` is the wrapped array."""

    def __setstate__(self, state):
        self.state = state

    @property
    def value(self) -> np.ndarray:
        if isinstance(self.state, dict) and "x" in self.state:
            return np.asarray(self.state["x"])
        raise InputError("a chumpy object in the model file has no array value ('x')")


_SPARSE = {"csc_matrix": sp.csc_matrix, "csr_matrix": sp.csr_matrix, "coo_matrix": sp.coo_matrix}
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module in ("copy_reg", "copyreg") and name in ("_reconstructor", "__newobj__"):
            return getattr(copyreg, name)
        if module == "__builtin__" and name == "object" or module == "builtins" and name == "object":
            return object
        if module.startswith("scipy.sparse") and name in _SPARSE:
            return _SPARSE[name]
        if module.startswith("chumpy"):
            return _ChumpyArray
        raise InputError(f"model file refers to {module}.{name}, which a body model file never needs; refusing to load it")


def _to_array(value):
    if isinstance(value, _ChumpyArray):
        return value.value
    if sp.issparse(value):
        return value.toarray()
    return np.asarray(value)


def load_pickle(path: Path) -> dict:
    """Unpickle a model file (py2 latin1 pickles included) with the restricted unpickler."""
    with open(path, "rb") as handle:
        try:
            data = _RestrictedUnpickler(handle, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as error:
            if isinstance(error, InputError):
                raise
            raise InputError(f"{path} is not a readable model pickle: {error}") from error
    if not isinstance(data, dict):
        raise InputError(f"{path} should hold a dict of arrays, found {type(data).__name__}")
    return data


def load_arrays(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read ``keys`` from an ``.npz`` (no pickled objects allowed) or ``.pkl`` model file."""
    path = Path(path)
    if path.stat().st_size > MAX_MODEL_FILE_BYTES:
        raise InputError(f"{path} is larger than {MAX_MODEL_FILE_BYTES} bytes; not a body model file")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise InputError(f"{path} lacks the keys {missing}; found {sorted(archive.files)}")
            try:
                return {key: np.asarray(archive[key]) for key in keys}
            except ValueError as error:
                raise InputError(f"{path}: a required array is stored as a pickled object: {error}") from error
    data = load_pickle(path)
    missing = [key for key in keys if key not in data]
    if missing:
        raise InputError(f"{path} lacks the keys {missing}; found {sorted(data)}")
    return {key: _to_array(data[key]) for key in keys}
