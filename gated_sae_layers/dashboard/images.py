"""Images of examples and decoder directions, as inline PNG data URIs."""

import base64
import struct
import zlib

import numpy as np

from gated_sae_layers._validation import check_positive_int


def png_data_uri(pixels):
    """A `data:image/png;base64,...` URI of an 8-bit image, written with zlib.

    Args:
        pixels: `(height, width)` (gray) or `(height, width, 3)` (RGB) uint8.

    Example:

    >>> uri = png_data_uri(np.zeros((2, 3), "uint8"))
    >>> uri.startswith("data:image/png;base64,iVBORw0KGgo")
    True
    """
    pixels = np.ascontiguousarray(pixels, "uint8")
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(
            "`pixels` must have shape (height, width) or (height, width, 3). "
            f"Received: pixels.shape={pixels.shape}")
    height, width = pixels.shape[:2]
    color_type = 0 if pixels.ndim == 2 else 2
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def gray_image(values, image_shape):
    """`values` reshaped to `image_shape`, min-max scaled to 0-255 gray."""
    image = np.asarray(values, "float64").reshape(image_shape)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return np.round(scaled * 255).astype("uint8")


def diverging_image(values, image_shape):
    """A signed direction as RGB: blue below 0, white at 0, red above,
    scaled by its largest `|value|` (for decoder rows)."""
    image = np.asarray(values, "float64").reshape(image_shape[:2])
    scale = float(np.abs(image).max()) or 1.0
    t = np.clip(image / scale, -1.0, 1.0)[..., None]
    white, red, blue = np.ones(3), np.array([0.8, 0.1, 0.1]), np.array([0.1, 0.25, 0.8])
    rgb = np.where(t >= 0, white + t * (red - white), white - t * (blue - white))
    return np.round(rgb * 255).astype("uint8")


class ImageContext:
    """Shows each example as an image, and each decoder row as one too.

    Args:
        image_shape: `(height, width)` or `(height, width, 1)`: the shape of
            one image, e.g. `(28, 28)` for MNIST.
        images: `(num_rows, prod(image_shape))` (or `(num_rows, *image_shape)`)
            pixels, one image per activation row; `None` when the rows are
            the pixels themselves (an SAE trained on images).

    A decoder row is drawn only where the SAE's `input_dim` is
    `prod(image_shape)` (its directions are then in pixel space).

    Example:

    >>> context = ImageContext((2, 2))
    >>> context.example(0, [0], [1.5], pixels=np.eye(2).reshape(1, 4))["value"]
    1.5
    """

    kind = "image"

    def __init__(self, image_shape, images=None):
        shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else None
        if not shape or len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 1):
            raise ValueError(
                "`image_shape` must be (height, width) or (height, width, 1). "
                f"Received: image_shape={image_shape!r}")
        self.image_shape = tuple(check_positive_int(d, "image_shape") for d in shape)
        self.pixels = int(np.prod(self.image_shape))
        if images is not None:
            images = np.asarray(images)
            if len(images.shape) < 2 or int(np.prod(images.shape[1:])) != self.pixels:
                raise ValueError(
                    f"`images` must hold one image of {self.pixels} pixels "
                    f"{self.image_shape} per row. Received: images.shape={images.shape}")
            images = images.reshape(len(images), self.pixels)
        self.images = images

    def check_input_dim(self, input_dim):
        """Raises unless the rows of `x` (`input_dim` values each) can be the
        images: with `images=None`, `prod(image_shape)` must be `input_dim`."""
        if self.images is None and self.pixels != input_dim:
            raise ValueError(
                f"`image_shape` must hold one pixel per value of a row of `x` "
                f"({input_dim}), since `images` is None (the rows are the pixels). "
                f"Received: image_shape={self.image_shape}, {self.pixels} pixels")

    def display_size(self, box):
        """`[width, height]` of an image drawn `box` CSS pixels on its long
        side, in the image's aspect ratio (each at least 1)."""
        height, width = self.image_shape[:2]
        scale = box / max(height, width)
        return [max(1, round(width * scale)), max(1, round(height * scale))]

    @property
    def num_rows(self):
        """Rows of `images`, or `None` (any number) when the rows are the pixels."""
        return None if self.images is None else len(self.images)

    def window_rows(self, row):
        """An image is its own context."""
        return np.array([row])

    def example(self, row, rows, activations, pixels=None):
        """A page's JSON for one example: its image and activation.

        `pixels` are the example's activation rows (used when `images` is
        `None`)."""
        values = self.images[row] if self.images is not None else np.asarray(pixels)[0]
        return {"row": int(row), "value": float(f"{activations[0]:.4g}"),
                "image": png_data_uri(gray_image(values, self.image_shape))}

    def decoder_image(self, decoder_row):
        """The data URI of a decoder row, or `None` if it is not an image."""
        if len(decoder_row) != self.pixels:
            return None
        return png_data_uri(diverging_image(decoder_row, self.image_shape))

    def label(self, rows):
        """Images have no short text label."""
        del rows
        return ""
