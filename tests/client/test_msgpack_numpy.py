"""Tests for openpi_client.msgpack_numpy: round trips, the published wire format, refusal of unsafe payloads."""

import msgpack
import numpy as np
import pytest

from openpi_client import msgpack_numpy


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        np.arange(6, dtype=np.uint8).reshape(3, 2).T,  # not C-contiguous
        np.arange(10, dtype=np.int64)[::3],
        np.array([True, False, True]),
        np.array(["ab", "cde"]),
        np.array([b"x", b"yz"]),
        np.zeros((0, 5), dtype=np.float64),
        np.array(3.5, dtype=np.float16),
        np.arange(4, dtype=">i4"),
    ],
)
def test_arrays_round_trip_with_dtype_shape_and_values(array):
    restored = msgpack_numpy.unpackb(msgpack_numpy.packb({"x": array}))["x"]
    assert restored.dtype == array.dtype
    assert restored.shape == array.shape
    np.testing.assert_array_equal(restored, array)


@pytest.mark.parametrize("scalar", [np.float32(1.25), np.int8(-3), np.uint64(2**63 + 1), np.bool_(True)])
def test_numpy_scalars_round_trip_as_scalars_of_the_same_type(scalar):
    restored = msgpack_numpy.unpackb(msgpack_numpy.packb([scalar]))[0]
    assert type(restored) is type(scalar)
    assert restored == scalar


def test_nested_observation_round_trips_with_plain_python_values():
    obs = {
        "images": {"cam_high": np.full((3, 4, 4), 7, np.uint8)},
        "state": np.linspace(0, 1, 14),
        "prompt": "fold the towel",
        "meta": [1, 2.5, None, True],
    }
    restored = msgpack_numpy.unpackb(msgpack_numpy.Packer().pack(obs))
    np.testing.assert_array_equal(restored["images"]["cam_high"], obs["images"]["cam_high"])
    np.testing.assert_array_equal(restored["state"], obs["state"])
    assert restored["prompt"] == "fold the towel"
    assert restored["meta"] == [1, 2.5, None, True]


def test_wire_format_matches_published_client():
    # openpi-client 0.1.2 encodes arrays as a map with binary keys and reads scalars' data as a python value.
    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    raw = msgpack.unpackb(msgpack_numpy.packb(array))
    assert raw == {b"__ndarray__": True, b"data": array.tobytes(), b"dtype": "<i2", b"shape": [2, 3]}
    assert msgpack.unpackb(msgpack_numpy.packb(np.float32(0.5))) == {
        b"__npgeneric__": True,
        b"data": 0.5,
        b"dtype": "<f4",
    }


def test_payload_built_by_another_encoder_decodes():
    values = np.array([[1.5, -2.0]], dtype="<f4")
    payload = msgpack.packb({"a": {b"__ndarray__": True, b"data": values.tobytes(), b"dtype": "<f4", b"shape": (1, 2)}})
    np.testing.assert_array_equal(msgpack_numpy.unpackb(payload)["a"], values)


@pytest.mark.parametrize(
    "value", [np.array([object()]), np.array([1 + 2j]), np.zeros(2, dtype="i4,f4"), np.complex64(1j)]
)
def test_packing_object_void_and_complex_is_refused(value):
    with pytest.raises(ValueError, match="Unsupported dtype"):
        msgpack_numpy.packb({"x": value})


def _raw_array(**overrides):
    fields = {b"__ndarray__": True, b"data": b"\x00" * 8, b"dtype": "<f4", b"shape": [2]}
    fields.update({key.encode(): value for key, value in overrides.items()})
    return msgpack.packb({"x": fields})


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_raw_array(dtype="|O"), "object"),
        (_raw_array(dtype="<c8", shape=[1]), "complex"),
        (_raw_array(dtype="V8", shape=[1]), "void"),
        (_raw_array(dtype="not-a-dtype"), "not a numpy dtype"),
        (_raw_array(dtype=5), "dtype"),
        (_raw_array(shape=[3]), "needs 12 bytes, got 8"),
        (_raw_array(shape=[-2]), "shape"),
        (_raw_array(shape="2"), "shape"),
        (_raw_array(data="text"), "data"),
        (msgpack.packb({b"__npgeneric__": True, b"data": [1], b"dtype": "<f4"}), "npgeneric data"),
        (msgpack.packb({b"__npgeneric__": True, b"data": 1, b"dtype": "|O"}), "object"),
    ],
)
def test_malformed_or_unsafe_payloads_raise_value_error_naming_the_field(payload, message):
    with pytest.raises(ValueError, match=message):
        msgpack_numpy.unpackb(payload)


def test_decoded_arrays_are_read_only_views_of_the_frame():
    restored = msgpack_numpy.unpackb(msgpack_numpy.packb(np.zeros(3)))
    assert not restored.flags.writeable
