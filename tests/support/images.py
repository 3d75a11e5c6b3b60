"""Images for the captioner's tests, made with Pillow: well-formed ones in every mode a client may send, and the
malformed cases the server must refuse (each with the reason its INVALID_ARGUMENT message gives)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def picture(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth gradients, a bright disc and noise (JPEG has real work to do on it)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    cx, cy = rng.uniform(0.2, 0.8, 2)  # each seed puts the disc elsewhere and orders the colours its own way
    b = 255 * ((x - width * cx) ** 2 + (y - height * cy) ** 2 < (min(width, height) / 4) ** 2)
    rgb = np.stack([r, g, b], axis=2)[..., rng.permutation(3)] + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def jpeg(seed: int = 0, width: int = 96, height: int = 64) -> bytes:
    return encode(picture(width, height, seed), "JPEG", quality=90)


def png(seed: int = 0, width: int = 96, height: int = 64) -> bytes:
    return encode(picture(width, height, seed), "PNG")


def rotated_jpeg(img: Image.Image, orientation: int) -> bytes:
    """A JPEG whose pixels are stored turned, with the EXIF orientation tag that tells a viewer how to turn them
    back: orientation 6 stores the picture rotated 90 degrees anticlockwise (a viewer turns it clockwise)."""
    stored = {6: img.transpose(Image.Transpose.ROTATE_90), 8: img.transpose(Image.Transpose.ROTATE_270),
              3: img.transpose(Image.Transpose.ROTATE_180)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring width x height 8-bit grey pixels with a tiny compressed body (a few rows of
    zeros): decoded, it would take width * height bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def jpeg_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A small JPEG whose frame header (SOF0) is rewritten to declare width x height pixels."""
    data = bytearray(jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def apng(frames: int = 3) -> bytes:
    """An animated PNG."""
    imgs = [picture(seed=i) for i in range(frames)]
    return encode(imgs[0], "PNG", save_all=True, append_images=imgs[1:], duration=100)


def grey16_png() -> bytes:
    """A 16-bit grey PNG: a horizontal ramp over the whole 16-bit range."""
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (32, 1))
    return encode(Image.fromarray(ramp), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(picture().convert("CMYK"), "JPEG", quality=95)


# Malformed images: name -> (bytes, a fragment of the refusal's message). Small enough for a fuzz test to run many.
def malformed() -> dict[str, tuple[bytes, str]]:
    j, p = jpeg(), png()
    corrupt_header = bytearray(p)
    corrupt_header[40:60] = b"\xff" * 20  # the first chunk after IHDR: its length and type
    bad_crc = bytearray(p)
    bad_crc[len(p) // 2] ^= 0xFF  # a byte of compressed pixels: the chunk's CRC no longer matches
    return {
        "empty": (b"", "empty"),
        "text": (b"a photo of a dog\n", "not a JPEG or PNG"),
        "gif": (encode(picture(), "GIF"), "not a JPEG or PNG"),
        "webp": (encode(picture(), "WEBP"), "not a JPEG or PNG"),
        "bmp": (encode(picture(), "BMP"), "not a JPEG or PNG"),
        "tiff": (encode(picture(), "TIFF"), "not a JPEG or PNG"),
        "jpeg_truncated": (j[: len(j) // 2], "truncated or corrupt JPEG"),
        "jpeg_header_only": (j[:20], "a JPEG signature but a corrupt header"),
        "png_truncated": (p[: len(p) // 2], "truncated or corrupt PNG"),
        "png_corrupt_header": (bytes(corrupt_header), "a PNG signature but a corrupt header"),
        "png_bad_crc": (bytes(bad_crc), "truncated or corrupt PNG"),
        "png_bomb": (png_bomb(), "over the limit"),
        "jpeg_bomb": (jpeg_bomb(), "over the limit"),
        "png_bomb_small": (png_bomb(5000, 5000), "pixels, over the limit"),
        "apng": (apng(), "animated"),
        "float_tiff": (encode(Image.new("F", (8, 8)), "TIFF"), "not a JPEG or PNG"),
    }
