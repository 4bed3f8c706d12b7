"""Conversion between parquet (arrow) columns of a LeRobot dataset and numpy arrays, both directions."""

import io
import json

import numpy as np
import PIL.Image
import pyarrow as pa


class ImageColumn:
    """Camera frames stored in parquet as PNG/JPEG bytes (an `image` feature); decoded on access."""

    def __init__(self, key: str, encoded: pa.Array):
        self.key = key
        self._encoded = encoded

    def __len__(self) -> int:
        return len(self._encoded)

    def hwc_uint8(self, row: int) -> np.ndarray:
        data = self._encoded[row].as_py()
        if data is None:
            raise ValueError(f"{self.key}: row {row} holds no image bytes")
        with PIL.Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))


def column_to_numpy(key: str, column: pa.ChunkedArray, shape: tuple[int, ...]) -> np.ndarray | ImageColumn:
    """Numpy view of one data column: scalars as (N,), fixed/variable lists as (N, *shape), strings as objects."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_struct(array.type):
        if array.type.get_field_index("bytes") < 0:
            raise ValueError(f"{key}: expected an image struct with a 'bytes' field, got {array.type}")
        return ImageColumn(key, array.field("bytes"))
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return np.asarray(array.to_pylist(), dtype=object)
    num_rows = len(array)
    if not (
        pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type) or pa.types.is_large_list(array.type)
    ):
        return array.to_numpy(zero_copy_only=False)
    values = array
    while (
        pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type) or pa.types.is_large_list(values.type)
    ):
        values = values.flatten()
    flat = values.to_numpy(zero_copy_only=False)
    if num_rows == 0:
        return flat.reshape(0, *shape)
    per_row = flat.size // num_rows
    if flat.size != per_row * num_rows or (int(np.prod(shape)) != per_row):
        raise ValueError(
            f"{key}: expected {int(np.prod(shape))} values per frame (shape {list(shape)}), got {flat.size} values in {num_rows} frames"
        )
    return flat.reshape(num_rows, *shape)


def _arrow_type(dtype: str) -> pa.DataType:
    if dtype == "string":
        return pa.string()
    return pa.from_numpy_dtype(np.dtype(dtype))


def _hf_feature(feature: dict) -> dict:
    """The `datasets` library's JSON description of a column (stored in parquet metadata so `datasets` reads it)."""
    dtype, shape = feature["dtype"], list(feature["shape"])
    if dtype == "image":
        return {"_type": "Image"}
    value = {"dtype": dtype, "_type": "Value"}
    if shape == [1]:
        return value
    if len(shape) == 1:
        return {"feature": value, "length": shape[0], "_type": "Sequence"}
    return {"shape": shape, "dtype": dtype, "_type": f"Array{len(shape)}D"}


def array_from_numpy(key: str, feature: dict, values: np.ndarray) -> pa.Array:
    """Arrow column for `values` (N, *shape): scalars for shape (1,), fixed-size lists otherwise."""
    shape = tuple(feature["shape"])
    arrow_type = _arrow_type(feature["dtype"])
    if feature["dtype"] == "string":
        return pa.array([str(v) for v in values.reshape(-1)], type=arrow_type)
    if shape == (1,):
        return pa.array(values.reshape(-1), type=arrow_type)
    array = pa.array(values.reshape(-1), type=arrow_type)
    for dim in reversed(shape):
        array = pa.FixedSizeListArray.from_arrays(array, dim)
    return array


def image_array(encoded: list[bytes]) -> pa.Array:
    """Image column in the layout the `datasets` library uses: struct<bytes: binary, path: string>."""
    return pa.StructArray.from_arrays(
        [pa.array(encoded, type=pa.binary()), pa.array([None] * len(encoded), type=pa.string())],
        names=["bytes", "path"],
    )


def table_with_hf_metadata(columns: dict[str, pa.Array], features: dict) -> pa.Table:
    table = pa.table(columns)
    hf_features = {key: _hf_feature(features[key]) for key in columns}
    metadata = {b"huggingface": json.dumps({"info": {"features": hf_features}}).encode()}
    return table.replace_schema_metadata(metadata)
