"""The playground in a real headless Chromium: type a prompt, press Generate, text streams in and is coloured."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.support.harness import generate as native_generate
from tests.support.harness import patched_run, slowed

pytest.importorskip("playwright")
from tests.support import playground

pytestmark = [pytest.mark.process, pytest.mark.skipif(playground.CHROMIUM is None,
                                                     reason="Debian's chromium is not installed (make system-packages)")]


def test_generation_streams_in_and_each_character_is_coloured(server, tmp_path):
    text, _ = native_generate(server.stub, model="tiny-lstm", prompt="KING:", max_tokens=120, temperature=0.8, seed=3)
    with playground.page(server.http) as tab, patched_run(server, "tiny-lstm", slowed(0.005)):
        g = playground.generate(tab, "tiny-lstm", "KING:", max_tokens=120, seed=3)
        shot = tab.screenshot(path=str(tmp_path / "playground.png"))
    assert g.text == "KING:" + text  # the same text as gRPC gives for the seed
    assert g.updates >= 4, "the text arrived in fewer than four DOM updates: it did not stream"
    assert g.coloured >= 0.9 * len(g.text) and re.match(r"length · 120 characters", g.status)
    assert len(shot) > 10_000


def test_a_classifiers_probabilities_are_drawn_as_bars(server):
    with playground.page(server.http) as tab:
        tab.wait_for_function("() => document.querySelector('#model option[value=\"tiny-sentiment\"]') !== null")
        tab.select_option("#model", "tiny-sentiment")
        tab.fill("#texts", "a gripping , funny film\ndull and far too long\nok")
        tab.click("#classify")
        tab.wait_for_selector("#bars .result:nth-child(3)")
        widths = tab.eval_on_selector_all("#bars .fill", "els => els.map(e => parseFloat(e.style.width))")
    assert len(widths) == 6
    assert np.allclose(np.array(widths).reshape(3, 2).sum(axis=1), 100, atol=0.2)  # each text's bars add up to 100%
