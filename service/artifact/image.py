"""How image bytes become the image encoder's input tensor: one function for training and serving.

Training caches encoder features from the dataset's files through `image_tensor`, and the server runs a
request's bytes through the same function, so the same bytes give the same tensor in both (tested).

Image bytes are untrusted: their size is checked before decoding, the pixel count from the header before
any pixel is decoded (a decompression bomb is refused, not decoded), and every decoding failure becomes an
ImageError naming why. Pillow does the decoding; the checks here only decide what it may be asked to do.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

FORMATS = ("JPEG", "PNG")
# Modes Pillow converts to RGB without a choice to make: colour, grey, palette, and CMYK JPEGs.
# Alpha is dropped (convert("RGB") keeps the colour under it).
CONVERTIBLE_MODES = ("RGB", "L", "P", "RGBA", "LA", "PA", "CMYK", "YCbCr", "1", "RGBX")
DEFAULT_MAX_BYTES = 8 << 20
# 16 million pixels decode to 48 MB of RGB: the most one image may make the server hold while it is resized.
DEFAULT_MAX_PIXELS = 16_000_000


class ImageError(ValueError):
    """An image the encoder cannot take, and why (the server answers INVALID_ARGUMENT naming the field)."""


@dataclass(frozen=True)
class ImageSpec:
    """The encoder's input: every image is resized (aspect ratio not kept) to height x width, bicubic,
    and scaled from [0, 255] to [-1, 1] (x / 127.5 - 1), channels first, RGB."""

    height: int
    width: int

    def to_dict(self) -> dict[str, object]:
        return {"height": self.height, "width": self.width, "resize": "bicubic, aspect ratio not kept",
                "scale": "x / 127.5 - 1", "layout": "RGB, channels first"}


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS


def decode(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """The upright RGB image in `data` (JPEG or PNG, one frame), or ImageError saying why not."""
    if not data:
        raise ImageError("empty: no image bytes")
    if len(data) > limits.max_bytes:
        raise ImageError(f"{len(data):,} bytes, over the limit of {limits.max_bytes:,}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)
        except Image.UnidentifiedImageError:
            raise ImageError(f"not a JPEG or PNG image (first bytes {data[:8]!r})") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(f"unreadable image header: {e}") from None
        width, height = img.size
        if width < 1 or height < 1:
            raise ImageError(f"{width}x{height}: an image needs at least one pixel")
        if width * height > limits.max_pixels:
            raise ImageError(f"{width}x{height} = {width * height:,} pixels, over the limit of {limits.max_pixels:,}")
        frames = getattr(img, "n_frames", 1)
        if frames > 1:
            raise ImageError(f"an animated {img.format} ({frames} frames): one still image expected")
        if img.mode not in CONVERTIBLE_MODES:
            raise ImageError(f"pixel mode {img.mode} (e.g. 16-bit samples) is not supported: 8-bit RGB, grey or CMYK")
        try:
            img.load()
            upright = ImageOps.exif_transpose(img)
            return upright.convert("RGB")
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as e:
            raise ImageError(f"truncated or corrupt {img.format}: {e}") from None


def to_tensor(img: Image.Image, spec: ImageSpec) -> np.ndarray:
    """(3, height, width) float32 in [-1, 1] from an RGB image."""
    resized = img.resize((spec.width, spec.height), Image.Resampling.BICUBIC)
    pixels = np.asarray(resized, dtype=np.float32)  # (H, W, 3)
    return np.ascontiguousarray((pixels / 127.5 - 1.0).transpose(2, 0, 1))


def image_tensor(data: bytes, spec: ImageSpec, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """The encoder input for one image's bytes: decode (checked), make upright, resize, scale."""
    return to_tensor(decode(data, limits), spec)
