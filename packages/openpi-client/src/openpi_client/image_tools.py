"""Image helpers for robot clients: aspect-preserving resize with zero padding, and float → uint8."""

from __future__ import annotations

import numpy as np
from PIL import Image


def convert_to_uint8(img: np.ndarray) -> np.ndarray:
    """Returns `img` as uint8; float images are taken to be in [0, 1] and clipped first.

    Sending uint8 instead of float32 cuts an image's size on the wire by four. Clipping keeps values just
    outside [0, 1] (e.g. from interpolation) from wrapping around in the cast.
    """
    if np.issubdtype(img.dtype, np.floating):
        return (255 * np.clip(img, 0.0, 1.0)).astype(np.uint8)
    return img


def resize_with_pad(images: np.ndarray, height: int, width: int, method: int = Image.BILINEAR) -> np.ndarray:
    """Resizes uint8 images `[..., h, w, c]` to `[..., height, width, c]` keeping their aspect ratio.

    Like `tf.image.resize_with_pad`: the image is scaled to fit inside the target and the rest is filled with
    zeros, the scaled image sitting at offset `((height - new_h) // 2, (width - new_w) // 2)`. Images that already
    have the target size are returned as they are (the same object).
    """
    if images.ndim < 3:
        raise ValueError(f"images: expected shape [..., height, width, channel], got {images.shape}")
    if images.shape[-3:-1] == (height, width):
        return images
    if images.dtype != np.uint8:
        raise ValueError(f"images: expected dtype uint8 (see convert_to_uint8), got {images.dtype}")

    batch_shape, image_shape = images.shape[:-3], images.shape[-3:]
    if 0 in batch_shape:
        return np.empty((*batch_shape, height, width, image_shape[-1]), dtype=images.dtype)

    flat = images.reshape(-1, *image_shape)
    resized = np.stack([_resize_one(image, height, width, method) for image in flat])
    return resized.reshape(*batch_shape, *resized.shape[-3:])


def _resize_one(image: np.ndarray, height: int, width: int, method: int) -> np.ndarray:
    """Resizes and pads one `[h, w, c]` image with PIL."""
    cur_height, cur_width = image.shape[:2]
    # PIL wants 2-D arrays for single-channel images.
    pil_image = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    ratio = max(cur_width / width, cur_height / height)
    # A very thin image must keep at least one row / column.
    resized_height = max(1, int(cur_height / ratio))
    resized_width = max(1, int(cur_width / ratio))
    resized = pil_image.resize((resized_width, resized_height), resample=method)

    canvas = Image.new(resized.mode, (width, height), 0)
    canvas.paste(resized, (max(0, (width - resized_width) // 2), max(0, (height - resized_height) // 2)))
    return np.asarray(canvas).reshape(height, width, image.shape[-1])
