"""How image bytes become the image encoder's input tensor: one function for training and serving.

Training caches encoder features from the dataset's files through `image_tensor`, and the server runs a
request's bytes through the same function, so the same bytes give the same tensor in both (tested).

Image bytes are untrusted: their size is checked before decoding, the pixel count from the header before
any pixel is decoded (a decompression bomb is refused, not decoded), and every decoding failure becomes an
ImageError naming why. Pillow does the decoding; the checks here only decide what it may be asked to do.

What is taken and how (the choices a caller may want to know):
- JPEG and PNG only, one frame: an animated PNG (or a multi-picture JPEG) is refused, not cut to its first frame.
- EXIF orientation is applied, so the model sees the picture upright, as a viewer shows it.
- CMYK (and YCCK) JPEGs are converted to RGB with Pillow's plain formula (no colour profile): the colours
  are close enough for a captioner, and refusing them would refuse a common kind of print-ready photo.
- Grey, palette and 1-bit images become RGB; 16-bit grey PNGs are scaled to 8 bits (x / 257) first
  (16-bit colour PNGs Pillow already reads as 8-bit RGB). Other sample formats (32-bit, float) are refused.
- Transparency is composited over white, as a viewer shows it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

FORMATS = ("JPEG", "PNG")
SIGNATURES = {"JPEG": b"\xff\xd8\xff", "PNG": b"\x89PNG\r\n\x1a\n"}
# Modes that become RGB without a choice to make: colour, grey, palette, 1-bit, CMYK and YCbCr JPEGs.
CONVERTIBLE_MODES = ("RGB", "L", "P", "RGBA", "LA", "PA", "CMYK", "YCbCr", "1", "RGBX", "La", "RGBa")
SIXTEEN_BIT_GREY = ("I;16", "I;16B", "I;16L", "I")  # PNG's 16-bit grey, as Pillow versions name it
DEFAULT_MAX_BYTES = 8 << 20
# 16 million pixels decode to 64 MB (Pillow keeps RGB at 4 bytes a pixel): the most one image may make the server
# hold while it is resized.
DEFAULT_MAX_PIXELS = 16_000_000
WHITE = (255, 255, 255)


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


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    """The image's header, read and checked: format, size, frames and mode. No pixel is decoded yet."""
    if not data:
        raise ImageError("empty: no image bytes")
    if len(data) > limits.max_bytes:
        raise ImageError(f"{len(data):,} bytes, over the limit of {limits.max_bytes:,}")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.UnidentifiedImageError:
        for fmt, magic in SIGNATURES.items():
            if data.startswith(magic):
                raise ImageError(f"a {fmt} signature but a corrupt header") from None
        raise ImageError(f"not a JPEG or PNG image (first bytes {data[:8]!r})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # Pillow's own, looser check
        raise ImageError(f"over the limit of {limits.max_pixels:,} pixels ({e})") from None
    except Exception as e:  # Pillow's parsers raise many types on malformed headers (struct.error, ...)
        raise ImageError(f"unreadable image header: {type(e).__name__}: {e}") from None
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError(f"{width}x{height}: an image needs at least one pixel")
    if width * height > limits.max_pixels:
        raise ImageError(f"{width}x{height} = {width * height:,} pixels, over the limit of {limits.max_pixels:,}")
    frames = getattr(img, "n_frames", 1)
    if frames != 1:
        raise ImageError(f"an animated or multi-picture {img.format} ({frames} frames): one still image expected")
    if img.mode not in CONVERTIBLE_MODES + SIXTEEN_BIT_GREY:
        raise ImageError(f"pixel mode {img.mode} is not supported: 8-bit RGB, grey, palette or CMYK, or 16-bit grey")
    return img


def _rgb(img: Image.Image) -> Image.Image:
    """A loaded image made upright 8-bit RGB, in place where it can be (see the module's docstring for each choice).

    No copy of an image that is already upright RGB: Pillow keeps RGB at 4 bytes a pixel, so each copy of a
    16-megapixel image is 64 MB, and two of them (exif_transpose's and convert's) held 3 x 64 MB per image being read.
    """
    ImageOps.exif_transpose(img, in_place=True)
    if img.mode in SIXTEEN_BIT_GREY:
        grey = np.asarray(img, dtype=np.uint32)  # (H, W), 0 .. 65535
        img = Image.fromarray(((grey + 128) // 257).clip(0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def decode(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """The upright RGB image in `data` (JPEG or PNG, one frame), or ImageError saying why not."""
    with warnings.catch_warnings():
        # Pillow's own bomb check warns past 89M pixels and raises past twice that; ours is stricter and runs
        # first, but a warning must never reach a log line per request, so any warning here is an error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)  # e.g. "palette images with transparency ... should be RGBA"
        img = _open(data, limits)
        try:
            img.load()
            return _rgb(img)
        except Exception as e:  # corrupt data surfaces as OSError, SyntaxError, EOFError, struct.error, ...
            raise ImageError(f"truncated or corrupt {img.format}: {type(e).__name__}: {e}") from None


def to_tensor(img: Image.Image, spec: ImageSpec) -> np.ndarray:
    """(3, height, width) float32 in [-1, 1] from an RGB image."""
    resized = img.resize((spec.width, spec.height), Image.Resampling.BICUBIC)
    pixels = np.asarray(resized, dtype=np.float32)  # (H, W, 3)
    return np.ascontiguousarray((pixels / 127.5 - 1.0).transpose(2, 0, 1))


def image_tensor(data: bytes, spec: ImageSpec, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """The encoder input for one image's bytes: decode (checked), make upright, resize, scale."""
    return to_tensor(decode(data, limits), spec)
