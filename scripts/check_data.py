"""Say where each bundled recipe reads its data from, and whether it is there (make data).

The recipes name their files relative to the repository root: the third-party data sets live in
../shared/data (each folder has a SOURCE.txt: repository, commit, licence, checksums) and are never
copied into the project; the code corpus is gathered on this machine by `make runs/data/python-stdlib.txt`.
Standard library only, so it runs before the virtualenv exists. Exit status 1 when a file is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_KEYS = ("path", "val_path")
# Files the Makefile makes on this machine before the recipe that reads them runs.
MADE_HERE = {
    "runs/data/python-stdlib.txt": "this machine's Python standard library, gathered by `make runs/data/python-stdlib.txt`",
}


def origin(name: str) -> str:
    """Where a data file comes from: the repository named in its folder's SOURCE.txt, or how it is made here."""
    if name in MADE_HERE:
        return MADE_HERE[name]
    path = ROOT / name
    source = (path if path.is_dir() else path.parent) / "SOURCE.txt"
    if source.is_file():
        for line in source.read_text(encoding="utf-8").splitlines():
            if line.startswith("Repository:"):
                return f"{line.split(':', 1)[1].strip()} (see {Path(name).parent}/SOURCE.txt)"
        return f"see {Path(name) / 'SOURCE.txt' if path.is_dir() else Path(name).parent / 'SOURCE.txt'}"
    return "no SOURCE.txt beside it"


def recipe_files() -> dict[str, list[str]]:
    """Data file → the recipes that read it."""
    users: dict[str, list[str]] = {}
    for recipe in sorted((ROOT / "recipes").glob("*.json")):
        data = json.loads(recipe.read_text(encoding="utf-8")).get("data", {})
        for key in DATA_KEYS:
            if key in data:
                users.setdefault(data[key], []).append(recipe.stem)
    return users


def main() -> int:
    missing = []
    for name, recipes in recipe_files().items():
        if (ROOT / name).is_file() or (ROOT / name).is_dir():  # a directory: the captioner's Flickr8k folder
            status = "ok"
        elif name in MADE_HERE:
            status = "to make"
        else:
            status = "MISSING"
            missing.append(name)
        print(f"{status:<8}{name}\n        used by {', '.join(recipes)}\n        from {origin(name)}")
    if missing:
        print(f"\nmissing: {' '.join(missing)}. The data sets belong in ../shared/data beside the checkout, "
              "read-only and never copied into the project.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
