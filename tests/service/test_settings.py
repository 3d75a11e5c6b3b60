"""Settings: defaults <- RNNSERVE_* environment <- flags, read once, unknown names and bad values refused."""

from __future__ import annotations

import dataclasses

import pytest

from service.settings import Settings
from tests.support.data import ROOT


def test_defaults_env_then_flags():
    assert Settings.load([], {}) == Settings()
    s = Settings.load(["--max-streams", "8", "--classify-max-delay-ms=0.5"],
                      {"RNNSERVE_MAX_STREAMS": "32", "RNNSERVE_PORT": "6000", "RNNSERVE_MODEL_DIR": "/m", "HOME": "/x",
                       "RNNSERVE_CLIENT_TOKEN": "the client CLI's, in the same shell"})
    assert (s.max_streams, s.port, s.model_dir, s.classify_max_delay_ms) == (8, 6000, "/m", 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1


def test_unknown_names_and_bad_values_are_errors():
    with pytest.raises(ValueError, match="unknown environment variable RNNSERVE_MAX_STREAM "):
        Settings.load([], {"RNNSERVE_MAX_STREAM": "3"})
    with pytest.raises(SystemExit):
        Settings.load(["--max-stream", "3"], {})
    with pytest.raises(ValueError, match="RNNSERVE_PORT expects int"):
        Settings.load([], {"RNNSERVE_PORT": "http"})
    with pytest.raises(ValueError, match="max_streams must be positive"):
        Settings.load(["--max-streams", "0"], {})
    with pytest.raises(ValueError, match="default_max_tokens"):
        Settings(max_tokens_limit=10, default_max_tokens=20)


def test_the_settings_table_in_docs_lists_every_setting():
    table = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    for f in dataclasses.fields(Settings):
        assert f"| `--{f.name.replace('_', '-')}` | `RNNSERVE_{f.name.upper()}` |" in table, f.name
