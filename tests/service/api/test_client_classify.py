"""The client CLI's classify: texts from a file or stdin, batched past the per-request limit, and a clear line for
text that is not UTF-8."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from service import client
from tests.support.data import ROOT, SST2_SENTENCES
from tests.support.harness import pb

TEXTS = [line.partition(" ")[2] for line in (SST2_SENTENCES / "stsa.binary.dev").read_text().splitlines()[:150]]


def _cli(server, *argv) -> None:
    client.main(["--target", f"localhost:{server.port}", "classify", "--model", "tiny-sentiment", *argv])


def _rows(out: str) -> list[tuple[str, str]]:
    return [(label, text) for label, _, text in (line.split("\t") for line in out.splitlines())]


def _alone(server, texts: list[str]) -> list[str]:
    return [server.stub.Classify(pb.ClassifyRequest(model="tiny-sentiment", texts=[t]), timeout=30).results[0].label
            for t in texts]


def test_a_file_of_more_texts_than_one_request_holds_is_sent_in_batches(server, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS[:70]) + "\n\n" + "\n".join(TEXTS[70:]) + "\n")  # blank lines are skipped
    ok = server.metric("rnnserve_requests_total", method="Classify", code="OK")
    _cli(server, "--file", str(texts))
    rows = _rows(capsys.readouterr().out)
    assert [text for _, text in rows] == TEXTS  # every text, in order
    assert server.metric("rnnserve_requests_total", method="Classify", code="OK") - ok == 3  # 64 + 64 + 22
    sample = list(range(0, 150, 15))
    assert [rows[i][0] for i in sample] == _alone(server, [TEXTS[i] for i in sample])


def test_stdin_and_arguments_together_with_a_smaller_batch(server, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\n".join(TEXTS[:5]).encode())))
    ok = server.metric("rnnserve_requests_total", method="Classify", code="OK")
    _cli(server, "fun", "--file", "-", "--batch-size", "2")
    assert [text for _, text in _rows(capsys.readouterr().out)] == ["fun", *TEXTS[:5]]
    assert server.metric("rnnserve_requests_total", method="Classify", code="OK") - ok == 3


@pytest.mark.process
def test_text_that_is_not_utf8_is_one_clear_line(server, tmp_path):
    # A real argv of bytes: Python hands the client a str with a lone surrogate where the byte was.
    r = subprocess.run([sys.executable, "-m", "service.client", "--target", f"localhost:{server.port}", "classify",
                        "--model", "tiny-sentiment", "fine", b"caf\xe9 au lait"], cwd=ROOT, capture_output=True, timeout=60)
    assert r.returncode == 1 and r.stdout == b""
    assert r.stderr.decode() == "error: text 2 is not valid UTF-8 (byte 0xe9 at character 4)\n"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good\nbad \xff line\n")
    with pytest.raises(SystemExit, match=r"bad\.txt:2: not valid UTF-8 \(byte 0xff\)"):
        _cli(server, "--file", str(bad))
    with pytest.raises(SystemExit, match="give texts to classify, or --file"):
        _cli(server)
