"""service/artifact/image.py: the one path from untrusted image bytes to the encoder's tensor."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from service.artifact.image import ImageError, ImageLimits, ImageSpec, decode, image_tensor, to_tensor
from tests.support import images
from tests.support.data import ROOT

SPEC = ImageSpec(32, 48)


@pytest.mark.parametrize("name", sorted(images.malformed()))
def test_every_malformed_image_is_refused_with_its_reason(name):
    data, reason = images.malformed()[name]
    with pytest.raises(ImageError, match=reason or None):
        image_tensor(data, SPEC, ImageLimits(max_pixels=1_000_000))


def test_the_byte_limit_is_checked_before_anything_is_decoded():
    data = images.jpeg()
    with pytest.raises(ImageError, match=f"{len(data):,} bytes, over the limit of 100"):
        decode(data, ImageLimits(max_bytes=100))


def test_a_bomb_is_refused_from_its_header_without_decoding_it(monkeypatch):
    """100,000 x 100,000 pixels would be 10 GB decoded: refused before any pixel is, so load() never runs."""
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("a refused image must not be decoded"))
    with pytest.raises(ImageError, match="over the limit"):
        decode(images.png_bomb(3000, 3000), ImageLimits(max_pixels=1_000_000))


def test_the_tensor_is_rgb_channels_first_in_minus_one_to_one():
    x = image_tensor(images.png(), SPEC)
    assert x.shape == (3, 32, 48) and x.dtype == np.float32 and x.flags.c_contiguous
    assert -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0
    red = to_tensor(Image.new("RGB", (5, 5), (255, 0, 0)), SPEC)
    assert np.allclose(red[0], 1.0) and np.allclose(red[1:], -1.0)


def test_exif_orientation_is_applied():
    """A JPEG stored turned with an orientation tag gives the tensor of the upright picture."""
    upright = images.picture(96, 64)
    want = to_tensor(decode(images.encode(upright, "JPEG", quality=95)), SPEC)
    for orientation in (3, 6, 8):
        img = decode(images.rotated_jpeg(upright, orientation))
        assert img.size == (96, 64), orientation
        assert np.abs(to_tensor(img, SPEC) - want).mean() < 0.05, orientation  # JPEG noise only
    stored = decode(images.encode(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95))
    assert stored.size == (64, 96)  # without the tag the stored pixels are taken as they are


def test_grey_palette_and_alpha_images_become_rgb():
    pic = images.picture()
    grey = decode(images.encode(pic.convert("L"), "PNG"))
    assert grey.mode == "RGB" and np.array_equal(np.asarray(grey)[..., 0], np.asarray(pic.convert("L")))
    palette = decode(images.encode(pic.convert("P"), "PNG"))
    assert palette.mode == "RGB" and np.abs(np.asarray(palette, np.int16) - np.asarray(pic, np.int16)).mean() < 20
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent black: shown as the white under it
    assert decode(images.encode(clear, "PNG")).getpixel((3, 3)) == (255, 255, 255)
    half = Image.new("LA", (8, 8), (0, 128))
    assert decode(images.encode(half, "PNG")).getpixel((3, 3)) == (127, 127, 127)
    assert decode(images.encode(Image.new("1", (8, 8), 1), "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_grey_png_is_scaled_to_eight_bits():
    img = decode(images.grey16_png())
    row = np.asarray(img)[0, :, 0]
    assert img.mode == "RGB" and row[0] == 0 and row[-1] == 255 and (np.diff(row.astype(int)) >= 0).all()


def test_cmyk_jpeg_is_converted_to_rgb():
    img = decode(images.cmyk_jpeg())
    want = np.asarray(images.picture(), np.int16)
    assert img.mode == "RGB" and np.abs(np.asarray(img, np.int16) - want).mean() < 25


PEAK_PROBE = """
import re, sys
from service.artifact.image import ImageSpec, image_tensor
def status(key):  # this process's own peak (VmHWM), unlike ru_maxrss, which a child starts at its parent's
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read())[1]) / 1024
data = sys.stdin.buffer.read()
before = status("VmRSS")
image_tensor(data, ImageSpec(128, 128))
print(status("VmHWM") - before)
"""


@pytest.mark.process
def test_reading_the_largest_image_holds_one_copy_of_its_pixels(tmp_path):
    """What the server holds per image being read (image_decode_threads of them at once): 16 megapixels are 64 MB
    in Pillow (4 bytes a pixel). exif_transpose's copy and convert("RGB")'s of an upright RGB image held 3 x 64 MB."""
    side = 4000
    out = tmp_path / "big.png"
    Image.linear_gradient("L").resize((side, side)).convert("RGB").save(out, "PNG")
    peak = subprocess.run([sys.executable, "-c", PEAK_PROBE], input=out.read_bytes(), capture_output=True,
                          check=True, cwd=ROOT, timeout=300)
    grown_mb = float(peak.stdout)
    assert grown_mb < 1.5 * side * side * 4 / 2**20, f"reading a {side}x{side} PNG grew the peak RSS by {grown_mb:.0f} MB"
