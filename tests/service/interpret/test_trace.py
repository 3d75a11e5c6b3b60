"""Trace through a real server: equals torch, streams in bounded messages, rejects what it must; the client's
page renders in headless Chromium with coloured characters on the screenshot."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import grpc
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from service import client
from service.kinds import char_lm
from tests.support.harness import pb
from tests.support.torch_reference import torch_activations
from training.checkpoint import load_checkpoint, model_of

TOL = 1e-4
TEXT = 'He said "so (it) is" and went.\nROMEO:\nAy me!'
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def tracing(serve):
    return serve(max_trace_chars=120, max_trace_units=40)


def _trace(stub, **fields) -> tuple[pb.TraceHeader, list[pb.TraceStep], int]:
    replies = list(stub.Trace(pb.TraceRequest(**fields), timeout=60))
    assert replies[0].HasField("header") and not replies[0].steps
    assert all(not r.HasField("header") for r in replies[1:])
    return replies[0].header, [s for r in replies[1:] for s in r.steps], len(replies) - 1


@pytest.mark.parametrize("name", ["tiny-lstm", "tiny-gru"])
def test_trace_equals_torch(tracing, model_repo, name):
    header, steps, _ = _trace(tracing.stub, model=name, text=TEXT, layers=[1, 0], units=[3, 17, 30], top_k=4)
    assert header.cell == name.removeprefix("tiny-") and header.n_chars == len(TEXT) == len(steps)
    assert [(c.layer, c.unit) for c in header.columns] == [(1, 3), (1, 17), (1, 30), (0, 3), (0, 17), (0, 30)]
    assert "".join(s.char for s in steps) == TEXT and [s.position for s in steps] == list(range(len(TEXT)))

    model, tok = model_of(load_checkpoint(model_repo.parent / "runs" / name / "last.pt"))
    want = torch_activations(model, tok.encode(TEXT)[None, :])
    layers, units = [c.layer for c in header.columns], [c.unit for c in header.columns]
    for q in header.quantities:
        got = np.array([list(getattr(s, q)) for s in steps])  # (T, columns)
        assert np.abs(got - want[q][layers, 0, :, units].T).max() < TOL, q
    for q in {"cell", "input_gate", "update_gate"} - set(header.quantities):
        assert all(not getattr(s, q) for s in steps)

    with torch.no_grad():
        logits = model(torch.as_tensor(tok.encode(TEXT)[None, :]), *model.init_state(1))[0][0].double()
    probs = torch.softmax(logits, dim=-1).numpy()  # (T, V)
    for t, s in enumerate(steps):
        assert len(s.next) == 4 and [c.probability for c in s.next] == sorted((c.probability for c in s.next), reverse=True)
        assert abs(s.next[0].probability - probs[t].max()) < TOL
        assert s.next[0].char == tok.token(int(probs[t].argmax()))


def test_trace_streams_bounded_messages(tracing, monkeypatch):
    monkeypatch.setattr(char_lm, "TRACE_MESSAGE_VALUES", 5 * 8 * 7)  # 5 quantities x 8 columns: 7 steps a message
    _, steps, n_messages = _trace(tracing.stub, model="tiny-lstm", text=TEXT, layers=[0], units=list(range(8)))
    assert n_messages == -(-len(TEXT) // 7) and [s.position for s in steps] == list(range(len(TEXT)))
    assert all(len(s.next) == 0 for s in steps)  # top_k 0: no predictions


INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
OK = {"model": "tiny-lstm", "text": "abc", "layers": [0], "units": [1]}
CASES = {
    "empty text": ({**OK, "text": ""}, INVALID, "text"),
    "text over the limit": ({**OK, "text": "x" * 121}, INVALID, "text: 121 characters"),
    "unit out of range": ({**OK, "units": [32]}, INVALID, "units: 32 is out of range"),
    "layer out of range": ({**OK, "layers": [2]}, INVALID, "layers: 2 is out of range"),
    "repeated unit": ({**OK, "units": [1, 1]}, INVALID, "units: must not repeat"),
    "too many columns": ({**OK, "layers": [], "units": []}, INVALID, "64 columns, the limit is 40"),
    "top_k too large": ({**OK, "top_k": 21}, INVALID, "top_k"),
    "classifier": ({**OK, "model": "tiny-sentiment"}, PRECONDITION, "char_lm"),
    "unknown model": ({**OK, "model": "nope"}, NOT_FOUND, "nope"),
}


@pytest.mark.parametrize("case", CASES)
def test_trace_rejects(tracing, case):
    fields, code, needle = CASES[case]
    with pytest.raises(grpc.RpcError) as err:
        list(tracing.stub.Trace(pb.TraceRequest(**fields), timeout=30))
    assert err.value.code() == code and needle in err.value.details()


def _screenshot(page: Path, png: Path) -> np.ndarray:
    """Debian's Chromium, headless, as root in a sandboxed kernel (MACHINE.md), fresh profile, no network features."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1000,600",
                        "--hide-scrollbars", page.as_uri()], check=True, capture_output=True, timeout=120)
    return plt.imread(png)[..., :3] * 255  # (H, W, 3)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make system-packages)")
@pytest.mark.process
def test_client_page_renders_coloured_text_in_chromium(tracing, tmp_path):
    page = tmp_path / "trace.html"
    client.main(["--target", f"localhost:{tracing.port}", "trace", "--model", "tiny-lstm", "--unit", "1:0-2",
                 "--unit", "0:5", "-o", str(page), TEXT * 2])
    html = page.read_text()
    assert "layer 1 · unit 0 · cell" in html and "http" not in html.split("<body>")[1]  # self-contained
    img = _screenshot(page, tmp_path / "shot.png")
    R, G, B = img[..., 0], img[..., 1], img[..., 2]
    red, blue = (R - B > 60) & (R - G > 40), (B - R > 60)
    assert img.shape[:2] == (600, 1000)
    assert red.sum() + blue.sum() > 400, "no coloured characters on the screenshot"
    assert (img.min(axis=2) < 60).sum() > 200, "no dark text on the screenshot"
