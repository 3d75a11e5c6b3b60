"""training/ imports nothing of service/ but the artifact contract, service.artifact (the artifact directory is
the one coupling between training and serving), which is all of service/ the training image copies
(deploy/train.Dockerfile)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.data import ROOT

CONTRACT = "service.artifact"


def service_imports(path: Path) -> list[str]:
    """Every module of service/ a file imports, at the top or inside a function (`from service import x`: service.x)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [f"service.{a.name}" for a in node.names] if node.module == "service" else [node.module]
    return [m for m in found if m == "service" or m.startswith("service.")]


def test_training_imports_only_the_artifact_contract_of_service():
    outside = {str(p.relative_to(ROOT)): bad for p in sorted((ROOT / "training").rglob("*.py"))
               if (bad := [m for m in service_imports(p) if m != CONTRACT and not m.startswith(CONTRACT + ".")])}
    assert not outside, f"training/ imports service/ beyond {CONTRACT}: {outside}"


def test_the_check_sees_each_form_of_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import service.artifact as a\nfrom service import artifact, models\n"
                 "def g():\n    from service.models.runners import make_session\n", encoding="utf-8")
    assert service_imports(f) == ["service.artifact", "service.artifact", "service.models", "service.models.runners"]


def test_the_training_image_copies_the_artifact_contract():
    dockerfile = (ROOT / "deploy" / "train.Dockerfile").read_text(encoding="utf-8")
    assert "COPY service/artifact /srv/rnnserve/service/artifact" in dockerfile
    assert "COPY training /srv/rnnserve/training" in dockerfile
