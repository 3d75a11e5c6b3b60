"""The bundled translator served by a real server: on a sample of the validation set, greedy and beam-5
translations are the hypotheses training's reference search finds with the same graphs, concurrent or alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from tests.support.data import MULTI30K, ROOT, need
from tests.support.harness import servers

MODEL = "multi30k-de-en"
ARTIFACT = ROOT / "models" / MODEL / "1"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not ARTIFACT.exists(), reason=f"{ARTIFACT} is not bundled")]


@pytest.fixture(scope="module")
def bundled():
    need(MULTI30K / "val.de")
    with servers(ROOT / "models") as start:
        yield start(max_streams=64)


def test_greedy_and_beam_translations_equal_the_reference_search(bundled):
    from training.ort_translator import OrtTranslator

    reference = OrtTranslator(ARTIFACT)
    alpha = reference.meta.translator["beam"]["length_penalty"]
    texts = (MULTI30K / "val.de").read_text(encoding="utf-8").splitlines()[100:116]

    def translate(text: str, beam: int) -> str:
        request = pb.TranslateRequest(model=MODEL, text=text, beam_size=beam)
        return "".join(r.text for r in bundled.stub.Translate(request, timeout=120))

    with ThreadPoolExecutor(len(texts)) as pool:
        greedy = list(pool.map(lambda t: translate(t, 1), texts))
        beam = list(pool.map(lambda t: translate(t, 5), texts))
    assert greedy == reference.translate(texts)
    assert beam == reference.translate(texts, 5, alpha)
    assert beam != greedy  # the sample holds sentences where the search changes the translation
