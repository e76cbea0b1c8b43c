"""Packing of the little-endian columnar tensors used on the wire (docs/architecture.md §3)."""

from __future__ import annotations

import numpy as np

from loopwise.errors import InvalidArgument

F32 = np.dtype("<f4")
F64 = np.dtype("<f8")
I32 = np.dtype("<i4")
I64 = np.dtype("<i8")


def pack(array: np.ndarray, dtype: np.dtype) -> bytes:
    """The array as contiguous little-endian bytes of ``dtype``."""
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def unpack_matrix(data: bytes, rows: int, cols: int, field: str, dtype: np.dtype = F32) -> np.ndarray:
    """A [rows, cols] array from packed bytes; INVALID_ARGUMENT naming ``field`` on a size mismatch."""
    expected = rows * cols * dtype.itemsize
    if rows < 0 or len(data) != expected:
        raise InvalidArgument(
            field, f"has {len(data)} bytes but rows={rows} × cols={cols} × {dtype.itemsize} = {expected}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(rows, cols)


def unpack_vector(data: bytes, dtype: np.dtype) -> np.ndarray:
    """A 1-d array from packed bytes."""
    return np.frombuffer(data, dtype=dtype)
