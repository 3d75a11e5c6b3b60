"""Generate service/gen/ from protos/ (python -m protos.build): message, stub and type-stub modules.

grpc_tools writes `from rnnserve.v1 import rnnserve_pb2`, which only imports with service/gen
on sys.path; the import is rewritten to the package path so `service.gen.rnnserve.v1` imports
cleanly from the repository root.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "service" / "gen"
PACKAGE = "service.gen"


def stale() -> bool:
    """True when a .proto is newer than the generated code (or nothing was generated yet)."""
    stamp = OUT / ".stamp"
    if not stamp.exists():
        return True
    return any(p.stat().st_mtime > stamp.stat().st_mtime for p in PROTOS.rglob("*.proto"))


def build() -> None:
    from grpc_tools import protoc  # dev dependency: generation happens at build time, never when serving

    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    ours = "(?:" + "|".join(sorted({p.split("/")[0] for p in protos})) + ")"  # our packages, not google.protobuf
    OUT.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={OUT}", f"--pyi_out={OUT}",
            f"--grpc_python_out={OUT}", *protos]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for path in OUT.rglob("*_pb2*.py"):
        text = path.read_text()
        fixed = re.sub(rf"^from ({ours}(?:\.\w+)*) import", rf"from {PACKAGE}.\1 import", text, flags=re.M)
        path.write_text(fixed)
    for d in [OUT, *(p for p in OUT.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
        (d / "__init__.py").touch()
    (OUT / ".stamp").touch()


if __name__ == "__main__":
    build()
    print(f"generated {OUT.relative_to(ROOT)}/ from {PROTOS.relative_to(ROOT)}/")
