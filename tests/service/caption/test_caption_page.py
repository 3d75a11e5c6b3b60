"""The client's caption command and the attention pictures: a PNG of lit panels and an HTML page that headless
Chromium draws with the image and its words."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from service import client
from service.interpret import captionpage
from tests.service.conftest import CAPTIONER
from tests.support import images

CHROMIUM = shutil.which("chromium")


def _caption(port: int, *args: str) -> None:
    client.main(["--target", f"localhost:{port}", "caption", "--model", CAPTIONER, *args])


def test_a_panel_is_bright_where_the_word_attended_and_dark_elsewhere():
    img = Image.new("RGB", (60, 40), (200, 200, 200))
    weights = np.zeros((1, 2, 3), np.float32)
    weights[0, 0, 0] = 1.0  # all attention on the top-left region
    (panel,) = captionpage.panels(img, ["dog"], weights.ravel().tolist(), 2, 3)
    px = np.asarray(panel, np.float32)[..., 0]
    h, w = px.shape
    assert max(panel.size) == captionpage.PANEL
    assert px[: h // 4, : w // 6].mean() > 150 > 60 > px[h // 2 :, w // 2 :].mean()


def test_panels_refuse_weights_that_do_not_fill_the_grid():
    with pytest.raises(ValueError, match="5 weights for 1 words over a 2 x 3 grid"):
        captionpage.panels(Image.new("RGB", (4, 4)), ["a"], [0.2] * 5, 2, 3)


def test_client_captions_images_and_writes_the_attention_pictures(caption_server, tmp_path, capsys):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"photo{i}.jpg")
        paths[-1].write_bytes(images.jpeg(i, 120, 80))
    _caption(caption_server.port, "--attention", "--out-dir", str(tmp_path / "out"), *map(str, paths))
    out, _ = capsys.readouterr()
    lines = out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == list(map(str, paths)) and all(line.split("\t")[1] for line in lines)
    for i in range(2):
        page = (tmp_path / "out" / f"photo{i}.attention.html").read_text(encoding="utf-8")
        words = lines[i].split("\t")[1].split()
        body = page.split("<body>")[1]
        assert "http" not in body  # self-contained
        assert body.count("<figcaption>") == len(words) + 1  # the image, then a panel per word
        sheet = plt.imread(tmp_path / "out" / f"photo{i}.attention.png")
        assert sheet.ndim == 3 and np.ptp(sheet[..., :3]) > 0.5


def test_client_streams_one_image_with_beam_search(caption_server, tmp_path, capsys):
    path = tmp_path / "one.png"
    path.write_bytes(images.png(3))
    _caption(caption_server.port, "--beam", "3", str(path))
    out, err = capsys.readouterr()
    assert out.strip() and re.search(r"\[FINISH_REASON_(STOP|LENGTH)\] \d+ tokens", err)


@pytest.mark.process
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make system-packages)")
def test_chromium_draws_the_page_with_the_image_and_its_words(caption_server, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(images.jpeg(5, 160, 100))
    _caption(caption_server.port, "--attention", "--out-dir", str(tmp_path), str(path))
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:  # as tests/service/test_trace.py runs it
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,900",
                        "--hide-scrollbars", (tmp_path / "photo.attention.html").as_uri()],
                       check=True, capture_output=True, timeout=120)
    img = plt.imread(shot)[..., :3] * 255  # (H, W, 3)
    colourful = (img.max(axis=2) - img.min(axis=2)) > 80  # the photo's saturated gradients, in every panel
    assert colourful.sum() > 20_000, "no image panels on the screenshot"
    assert (img.max(axis=2) < 60).sum() > 200, "no dark text or dimmed regions on the screenshot"
