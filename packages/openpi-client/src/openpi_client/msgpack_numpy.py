"""msgpack with numpy arrays and scalars, in the wire format of the published openpi-client.

An array travels as a map `{b"__ndarray__": True, b"data": <raw bytes, C order>, b"dtype": <dtype.str>,
b"shape": <list>}` and a numpy scalar as `{b"__npgeneric__": True, b"data": <python value>, b"dtype": <dtype.str>}`
(the keys are msgpack binary strings). Object, void (structured) and complex dtypes are refused both ways: they
cannot be rebuilt safely from raw bytes. Unlike pickle, decoding never runs code.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import msgpack
import numpy as np

_NDARRAY = b"__ndarray__"
_NPGENERIC = b"__npgeneric__"
_REFUSED_KINDS = {"O": "object", "V": "void/structured", "c": "complex"}


def _check_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind in _REFUSED_KINDS:
        raise ValueError(
            f"Unsupported dtype {dtype} ({_REFUSED_KINDS[dtype.kind]}): only numeric, bool and string arrays"
        )
    return dtype


def pack_array(obj: Any) -> Any:
    """msgpack `default` hook: turns numpy arrays and scalars into maps msgpack can encode."""
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype)
        return {_NDARRAY: True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        _check_dtype(obj.dtype)
        return {_NPGENERIC: True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def unpack_array(obj: dict) -> Any:
    """msgpack `object_hook`: rebuilds numpy arrays and scalars; checks dtype, shape and size first."""
    if _NDARRAY in obj:
        dtype, data, shape = _decoded_dtype(obj), obj.get(b"data"), obj.get(b"shape")
        if not isinstance(data, bytes):
            raise ValueError(f"ndarray data: expected bytes, got {type(data).__name__}")
        if not isinstance(shape, (list, tuple)) or not all(isinstance(dim, int) and dim >= 0 for dim in shape):
            raise ValueError(f"ndarray shape: expected a list of non-negative ints, got {shape!r}")
        expected_bytes = math.prod(shape) * dtype.itemsize
        if len(data) != expected_bytes:
            raise ValueError(
                f"ndarray data: shape {tuple(shape)} of {dtype} needs {expected_bytes} bytes, got {len(data)}"
            )
        return np.ndarray(buffer=data, dtype=dtype, shape=tuple(shape))
    if _NPGENERIC in obj:
        data = obj.get(b"data")
        if not isinstance(data, (bool, int, float, str, bytes)):
            raise ValueError(f"npgeneric data: expected a bool, int, float, str or bytes, got {type(data).__name__}")
        return _decoded_dtype(obj).type(data)
    return obj


def _decoded_dtype(obj: dict) -> np.dtype:
    name = obj.get(b"dtype")
    if not isinstance(name, str):
        raise ValueError(f"dtype: expected a numpy dtype string such as '<f4', got {name!r}")
    try:
        dtype = np.dtype(name)
    except (TypeError, ValueError) as error:
        raise ValueError(f"dtype: {name!r} is not a numpy dtype") from error
    if dtype.itemsize == 0:
        raise ValueError(f"dtype: {name!r} has no item size")
    return _check_dtype(dtype)


Packer = functools.partial(msgpack.Packer, default=pack_array)
packb = functools.partial(msgpack.packb, default=pack_array)

Unpacker = functools.partial(msgpack.Unpacker, object_hook=unpack_array)
unpackb = functools.partial(msgpack.unpackb, object_hook=unpack_array)
