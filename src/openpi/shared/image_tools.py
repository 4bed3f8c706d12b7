"""Image resizing and training augmentations in JAX (pure functions, jit- and vmap-friendly)."""

import math

import jax
import jax.numpy as jnp

from openpi.shared import array_typing as at


def resize_with_pad(
    images: at.Real[at.Array, "*b h w c"],
    height: int,
    width: int,
    method: jax.image.ResizeMethod = jax.image.ResizeMethod.LINEAR,
) -> at.Real[at.Array, "*b {height} {width} c"]:
    """Resizes to fit inside (height, width) keeping the aspect ratio, then pads symmetrically.

    uint8 images are padded with 0 (black); float images are assumed in [-1, 1] and padded with -1 (black).
    """
    has_batch_dim = images.ndim == 4
    if not has_batch_dim:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"images: expected shape [b, h, w, c] or [h, w, c], got {images.shape}")
    cur_height, cur_width = images.shape[1:3]
    ratio = max(cur_width / width, cur_height / height)
    resized_height = int(cur_height / ratio)
    resized_width = int(cur_width / ratio)
    resized = jax.image.resize(
        images.astype(jnp.float32), (images.shape[0], resized_height, resized_width, images.shape[3]), method=method
    )
    if images.dtype == jnp.uint8:
        resized = jnp.round(resized).clip(0, 255).astype(jnp.uint8)
        pad_value = 0
    else:
        resized = resized.clip(-1.0, 1.0).astype(images.dtype)
        pad_value = -1.0
    pad_top, extra_h = divmod(height - resized_height, 2)
    pad_left, extra_w = divmod(width - resized_width, 2)
    padded = jnp.pad(
        resized,
        ((0, 0), (pad_top, pad_top + extra_h), (pad_left, pad_left + extra_w), (0, 0)),
        constant_values=pad_value,
    )
    return padded if has_batch_dim else padded[0]


def _random_crop_resize(rng: at.KeyArrayLike, image: at.Array, scale: float) -> at.Array:
    height, width = image.shape[:2]
    crop_h, crop_w = int(height * scale), int(width * scale)
    rng_y, rng_x = jax.random.split(rng)
    top = jax.random.randint(rng_y, (), 0, height - crop_h + 1)
    left = jax.random.randint(rng_x, (), 0, width - crop_w + 1)
    crop = jax.lax.dynamic_slice(image, (top, left, 0), (crop_h, crop_w, image.shape[2]))
    return jax.image.resize(crop, image.shape, method="linear")


def _rotate(rng: at.KeyArrayLike, image: at.Array, max_degrees: float) -> at.Array:
    """Rotates about the centre with bilinear sampling; uncovered corners become 0 (black in [0, 1])."""
    angle = jax.random.uniform(rng, (), minval=-max_degrees, maxval=max_degrees) * (math.pi / 180.0)
    height, width = image.shape[:2]
    ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij")
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    src_y = cos * (ys - cy) - sin * (xs - cx) + cy
    src_x = sin * (ys - cy) + cos * (xs - cx) + cx

    def sample(channel):
        return jax.scipy.ndimage.map_coordinates(channel, [src_y, src_x], order=1, mode="constant", cval=0.0)

    return jax.vmap(sample, in_axes=-1, out_axes=-1)(image)


def _grayscale(image: at.Array) -> at.Array:
    return (image @ jnp.array([0.299, 0.587, 0.114], dtype=image.dtype))[..., None]


def _color_jitter(rng: at.KeyArrayLike, image: at.Array, brightness: float, contrast: float, saturation: float):
    rng_b, rng_c, rng_s = jax.random.split(rng, 3)
    image = image * jax.random.uniform(rng_b, (), minval=1 - brightness, maxval=1 + brightness)
    mean_gray = jnp.mean(_grayscale(image))
    image = mean_gray + (image - mean_gray) * jax.random.uniform(rng_c, (), minval=1 - contrast, maxval=1 + contrast)
    gray = _grayscale(image)
    image = gray + (image - gray) * jax.random.uniform(rng_s, (), minval=1 - saturation, maxval=1 + saturation)
    return jnp.clip(image, 0.0, 1.0)


def augment_image(
    rng: at.KeyArrayLike, image: at.Float[at.Array, "h w c"], *, geometric: bool
) -> at.Float[at.Array, "h w c"]:
    """pi0 training augmentation for one image in [0, 1].

    geometric=True (cameras that are not on a wrist): random 95 % crop resized back, rotation within ±5°.
    Always: colour jitter (brightness 0.3, contrast 0.4, saturation 0.5).
    """
    rng_crop, rng_rot, rng_color = jax.random.split(rng, 3)
    if geometric:
        image = _random_crop_resize(rng_crop, image, scale=0.95)
        image = _rotate(rng_rot, image, max_degrees=5.0)
    return _color_jitter(rng_color, image, brightness=0.3, contrast=0.4, saturation=0.5)
