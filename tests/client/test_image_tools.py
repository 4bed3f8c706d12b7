"""Tests for openpi_client.image_tools: letterbox resize placement, batching, uint8 conversion."""

import numpy as np
from PIL import Image
import pytest

from openpi_client import image_tools


def test_wide_image_is_scaled_to_width_and_centered_vertically():
    image = np.full((10, 20, 3), 255, np.uint8)
    expected = np.zeros((8, 8, 3), np.uint8)
    expected[2:6] = 255
    np.testing.assert_array_equal(image_tools.resize_with_pad(image, 8, 8), expected)


def test_camera_frame_matches_pil_bilinear_resize_pasted_at_floor_half_offset():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    out = image_tools.resize_with_pad(image, 224, 224)
    # ratio 640/224 -> 168 rows, (224 - 168) // 2 = 28 rows of padding above.
    expected_content = np.asarray(Image.fromarray(image).resize((224, 168), resample=Image.BILINEAR))
    np.testing.assert_array_equal(out[28:196], expected_content)
    assert not out[:28].any()
    assert not out[196:].any()


def test_odd_padding_puts_the_extra_row_below():
    image = np.full((4, 10, 3), 9, np.uint8)
    out = image_tools.resize_with_pad(image, 5, 10)
    # 4 rows of content in 5: offset (5 - 4) // 2 = 0, so the spare row is at the bottom.
    assert out[:4].all()
    assert not out[4].any()


@pytest.mark.parametrize(("shape", "row", "col"), [((1, 1000, 3), 49, None), ((1000, 1, 3), None, 49)])
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
def test_thin_images_keep_one_centered_line(shape, row, col, batch):
    image = np.full((*batch, *shape), 255, np.uint8)
    expected = np.zeros((*batch, 100, 100, 3), np.uint8)
    if row is not None:
        expected[..., row, :, :] = 255
    else:
        expected[..., :, col, :] = 255
    np.testing.assert_array_equal(image_tools.resize_with_pad(image, 100, 100), expected)


def test_batch_dimensions_are_preserved_and_each_image_resized_independently():
    images = np.stack([np.full((6, 12, 3), value, np.uint8) for value in (10, 20, 30, 40)]).reshape(2, 2, 6, 12, 3)
    out = image_tools.resize_with_pad(images, 4, 4)
    assert out.shape == (2, 2, 4, 4, 3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[1, 0, 1:3], 30)
    assert not out[:, :, 0].any()


@pytest.mark.parametrize("batch_shape", [(0,), (2, 0)])
def test_empty_batch_gives_empty_result_of_target_shape(batch_shape):
    out = image_tools.resize_with_pad(np.empty((*batch_shape, 8, 12, 3), np.uint8), 4, 6)
    assert out.shape == (*batch_shape, 4, 6, 3)
    assert out.dtype == np.uint8


def test_single_channel_images_keep_their_channel_axis():
    out = image_tools.resize_with_pad(np.full((2, 10, 20, 1), 5, np.uint8), 8, 8)
    assert out.shape == (2, 8, 8, 1)
    np.testing.assert_array_equal(out[:, 2:6], 5)


def test_image_already_at_target_size_is_returned_unchanged():
    image = np.zeros((3, 8, 8, 3), np.float32)
    assert image_tools.resize_with_pad(image, 8, 8) is image


def test_float_images_needing_resize_are_refused_with_a_hint():
    with pytest.raises(ValueError, match="expected dtype uint8"):
        image_tools.resize_with_pad(np.zeros((10, 20, 3), np.float32), 8, 8)


def test_nearest_method_is_honoured():
    image = np.zeros((2, 2, 3), np.uint8)
    image[0, 0] = 200
    out = image_tools.resize_with_pad(image, 4, 4, method=Image.NEAREST)
    np.testing.assert_array_equal(out[:2, :2], 200)
    assert not out[2:].any()


def test_convert_to_uint8_scales_and_clips_floats():
    image = np.array([[-0.5, 0.0, 0.5, 1.0, 1.5]], np.float32)
    np.testing.assert_array_equal(image_tools.convert_to_uint8(image), [[0, 0, 127, 255, 255]])


def test_convert_to_uint8_leaves_integer_images_alone():
    image = np.full((2, 2, 3), 17, np.uint8)
    assert image_tools.convert_to_uint8(image) is image
