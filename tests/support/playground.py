"""Drive the playground in Debian's headless Chromium (Playwright, no downloaded browser): type, press, watch.

Also a script for the README's picture, against a running server:
`python -m tests.support.playground http://localhost:8000 python-lstm "def f(x):" docs/http-playground.png`
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from playwright.sync_api import Page, sync_playwright

CHROMIUM = shutil.which("chromium")
# Counts the batches of characters the page appends to #output while a generation streams in.
COUNT_UPDATES = """() => { window.updates = 0;
  new MutationObserver(() => { window.updates += 1; }).observe(document.getElementById('output'), {childList: true}); }"""
# Counts the pieces of text the page appends to #translation while a translation streams in.
COUNT_TRANSLATION_UPDATES = """() => { window.updates = 0;
  new MutationObserver(() => { window.updates += 1; }).observe(document.getElementById('translation'), {childList: true}); }"""
COLOURED = """() => Array.from(document.querySelectorAll('#output span'))
  .filter(s => s.style.background && s.style.background !== 'rgb(255, 255, 255)').length"""


@dataclass
class Generation:
    text: str  # what #output shows: the prompt, then the generated text
    updates: int  # DOM updates of #output after Generate was pressed
    coloured: int  # characters with a colour other than white
    status: str


@contextmanager
def page(base_url: str, width: int = 1100, height: int = 700) -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page(viewport={"width": width, "height": height})
            tab.goto(base_url + "/")
            yield tab
        finally:
            browser.close()


def choose(tab: Page, model: str) -> None:
    """Pick a model, once the page has listed it."""
    tab.wait_for_function(f"() => document.querySelector('#model option[value=\"{model}\"]') !== null")
    tab.select_option("#model", model)


def generate(tab: Page, model: str, prompt: str, max_tokens: int, seed: int, temperature: float = 0.8,
             timeout_ms: float = 60_000) -> Generation:
    choose(tab, model)
    tab.fill("#prompt", prompt)
    tab.fill("#max_tokens", str(max_tokens))
    tab.fill("#temperature", str(temperature))
    tab.fill("#seed", str(seed))
    tab.evaluate(COUNT_UPDATES)
    tab.click("#generate")
    tab.wait_for_function("() => /^(length|stop) · /.test(document.getElementById('lm-status').textContent)",
                          timeout=timeout_ms)
    # The last trace may still be on its way: wait until every character has its colour (or colouring stopped).
    tab.wait_for_function(f"() => ({COLOURED})() + "
                          "Array.from(document.querySelectorAll('#output span')).filter(s => s.style.background === "
                          "'rgb(255, 255, 255)').length === document.querySelectorAll('#output span').length "
                          "|| /colouring stopped/.test(document.getElementById('lm-status').textContent)",
                          timeout=timeout_ms)
    return Generation(tab.inner_text("#output"), tab.evaluate("() => window.updates"), tab.evaluate(COLOURED),
                      tab.inner_text("#lm-status"))


@dataclass
class Translation:
    text: str  # what #translation shows
    updates: int  # DOM updates of #translation after Translate was pressed
    heatmap: list[list[str]]  # the alignment's cells' backgrounds, a row per output token
    columns: list[str]  # the source tokens heading the alignment's columns
    status: str


def translate(tab: Page, model: str, text: str, timeout_ms: float = 60_000) -> Translation:
    choose(tab, model)
    tab.fill("#source", text)
    tab.evaluate(COUNT_TRANSLATION_UPDATES)
    tab.click("#translate")
    tab.wait_for_function("() => /^(length|stop) · /.test(document.getElementById('translate-status').textContent)",
                          timeout=timeout_ms)
    heatmap = tab.eval_on_selector_all("#alignment tbody tr", "rows => rows.map(r => Array.from(r.querySelectorAll('td'), c => "
                                       "c.style.background))")
    columns = tab.eval_on_selector_all("#alignment thead th", "ths => ths.slice(1).map(th => th.textContent)")
    return Translation(tab.inner_text("#translation"), tab.evaluate("() => window.updates"), heatmap, columns,
                       tab.inner_text("#translate-status"))


if __name__ == "__main__":
    url, model, prompt, out = sys.argv[1:5]
    with page(url) as tab:
        g = generate(tab, model, prompt, max_tokens=400, seed=7)
        tab.screenshot(path=out, full_page=True)
    print(f"{len(g.text)} characters, {g.updates} updates, {g.coloured} coloured: {g.status}")
