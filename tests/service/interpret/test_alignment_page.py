"""The client's translate command and the alignment picture: an HTML page that headless Chromium draws with
coloured cells and legible tokens, and a PNG heatmap (matplotlib)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import pytest

from service import client
from service.interpret import alignpage

CHROMIUM = shutil.which("chromium")
TEXT = "Ein Mann schläft in einem grünen Raum auf einem Sofa."


def _translate(port: int, *args: str) -> None:
    client.main(["--target", f"localhost:{port}", "translate", "--model", "tiny-translator", *args, TEXT])


def test_labels_drop_the_word_start_mark_and_flag_word_pieces():
    assert alignpage.labels(["▁Ein", "▁Ma", "nn", ".", "</s>"]) == ["Ein", "Ma", "·nn", "·.", "</s>"]
    assert alignpage.labels(["A", "man", "."]) == ["A", "man", "."]  # word-level tokens stay as they are


def test_render_refuses_weights_that_do_not_fill_the_grid():
    with pytest.raises(ValueError, match="5 weights for 2 x 3 tokens"):
        alignpage.render("t", ["a", "b", "c"], ["x", "y"], [0.2] * 5)


def test_client_prints_the_translation_and_writes_a_page_with_a_cell_per_token_pair(server, tmp_path, capsys):
    page = tmp_path / "alignment.html"
    _translate(server.port, "--beam", "2", "--attention", str(page))
    out, err = capsys.readouterr()
    assert out.strip() and re.search(r"\[FINISH_REASON_(STOP|LENGTH)\] \d+ -> (\d+) tokens", err)
    generated = int(re.search(r"-> (\d+) tokens", err).group(1))
    html = page.read_text(encoding="utf-8")
    body = html.split("<body>")[1]
    assert "http" not in body  # self-contained
    n_source = body.split("<tbody>")[0].count("<th>") - 1  # the corner cell is a <th> too
    assert body.count("<td ") == generated * n_source and n_source > 5
    assert "Mann" in body and "Sofa" in body  # source tokens, without their word-start mark


@pytest.mark.process
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make system-packages)")
def test_chromium_draws_the_page_with_coloured_cells_and_dark_text(server, tmp_path):
    page, png = tmp_path / "alignment.html", tmp_path / "shot.png"
    _translate(server.port, "--attention", str(page))
    with tempfile.TemporaryDirectory() as profile:  # as tests/service/test_trace.py runs it
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1000,900",
                        "--hide-scrollbars", page.as_uri()], check=True, capture_output=True, timeout=120)
    img = plt.imread(png)[..., :3] * 255  # (H, W, 3)
    R, G, B = img[..., 0], img[..., 1], img[..., 2]
    red = (R - B > 60) & (R - G > 40)
    assert red.sum() > 400, "no attention cells on the screenshot"
    assert (img.min(axis=2) < 60).sum() > 200, "no dark text on the screenshot"


def test_client_writes_a_png_heatmap(server, tmp_path):
    png = tmp_path / "alignment.png"
    _translate(server.port, "--attention", str(png))
    img = plt.imread(png)
    assert img.ndim == 3 and min(img.shape[:2]) > 100
    assert np.ptp(img[..., :3]) > 0.5  # a picture, not a blank canvas
