"""Binary layer payloads: vertex ids as sorted unique uint32, values as float32, both little-endian."""
from __future__ import annotations

import numpy as np

_IDS = np.dtype("<u4")
_VALUES = np.dtype("<f4")


def encode_ids(ids: np.ndarray) -> bytes:
    array = np.asarray(ids, dtype=np.int64)
    if array.size > 1 and not (array[1:] > array[:-1]).all():  # already sorted and unique: no second sort
        array = np.unique(array)
    return array.astype(_IDS).tobytes()


def decode_ids(data: bytes) -> np.ndarray:
    """(K,) int64 sorted unique vertex ids."""
    return np.frombuffer(data, dtype=_IDS).astype(np.int64)


def encode_values(values: np.ndarray) -> bytes:
    return np.asarray(values, dtype=np.float64).astype(_VALUES).tobytes()


def decode_values(data: bytes) -> np.ndarray:
    """(N,) float32 per-vertex or per-point values."""
    return np.frombuffer(data, dtype=_VALUES).copy()


def encode(encoding: str, array: np.ndarray) -> bytes:
    return encode_ids(array) if encoding == "ids" else encode_values(array)


def decode(encoding: str, data: bytes) -> np.ndarray:
    return decode_ids(data) if encoding == "ids" else decode_values(data)


def ids_to_mask(ids: np.ndarray, count: int) -> np.ndarray:
    """(count,) bool mask from vertex ids."""
    mask = np.zeros(count, dtype=bool)
    mask[ids] = True
    return mask
