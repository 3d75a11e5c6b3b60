"""The playground in a real headless Chromium: type a prompt, press Generate, text streams in and is coloured; a
classifier's probabilities as bars; a translation streams in and its alignment is drawn as a heatmap."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.support.harness import generate as native_generate
from tests.support.harness import patched_run, pb, slowed

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


def test_a_translation_streams_in_and_its_alignment_is_drawn(server):
    from tests.service.api.test_translate import MODEL, VAL, slow_steps

    replies = list(server.stub.Translate(pb.TranslateRequest(model=MODEL, text=VAL[5], return_attention=True),
                                         timeout=60))
    alignment = replies[-1].finished.alignment
    with playground.page(server.http) as tab, slow_steps(server, 0.02):
        t = playground.translate(tab, MODEL, VAL[5])
    assert t.text == "".join(r.text for r in replies)  # the same translation as gRPC gives
    assert t.updates >= 2, "the translation arrived in one DOM update: it did not stream"
    assert re.match(rf"(length|stop) · {len(alignment.source_tokens)} → {len(alignment.target_tokens)} tokens", t.status)
    # One row per output token, one cell per source token, each coloured by its weight (white is none).
    assert [len(row) for row in t.heatmap] == [len(alignment.source_tokens)] * len(alignment.target_tokens)
    assert len(t.columns) == len(alignment.source_tokens) and all(t.columns)
    assert all(c.startswith("rgb(") for row in t.heatmap for c in row)
    assert any(c != "rgb(255, 255, 255)" for row in t.heatmap for c in row)
