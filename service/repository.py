"""The model repository: <root>/<name>/<version>/ artifacts, each validated and loaded, broken ones skipped."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from service import artifact
from service.artifact import Meta
from service.errors import NotFound
from service.runners import ClassifierRunner, LMRunner, make_session
from service.tokenizer import Tokenizer

log = logging.getLogger("rnnserve")


@dataclass
class Model:
    name: str
    version: int
    path: Path
    meta: Meta
    tokenizer: Tokenizer
    runner: LMRunner | ClassifierRunner

    @property
    def kind(self) -> str:
        return self.meta.kind


def load_model(path: Path, name: str, version: int, intra_op_threads: int = 0, inter_op_threads: int = 1) -> Model:
    """Load one artifact directory; raises ValueError/OSError saying what is wrong with it."""
    for f in (artifact.META_FILE, artifact.TOKENIZER_FILE, artifact.MODEL_FILE):
        if not (path / f).is_file():
            raise ValueError(f"missing {f}")
    meta = Meta.load(path / artifact.META_FILE)
    tok = Tokenizer.load(path / artifact.TOKENIZER_FILE)
    if tok.vocab_size != meta.sizes["vocab_size"]:
        raise ValueError(f"tokenizer has {tok.vocab_size} tokens, meta.json sizes.vocab_size is {meta.sizes['vocab_size']}")
    if meta.kind == "char_lm" and tok.level != "char":
        raise ValueError(f"a char_lm needs a char tokenizer, got level {tok.level!r}")
    threads = intra_op_threads or int(meta.runtime.get("intra_op_num_threads", 1))
    try:
        sess = make_session(path / artifact.MODEL_FILE, threads, inter_op_threads)
    except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
        raise ValueError(f"ONNX Runtime cannot load model.onnx: {err}") from err
    runner = LMRunner(sess, meta) if meta.kind == "char_lm" else ClassifierRunner(sess, meta, tok)
    runner.self_check()
    return Model(name, version, path, meta, tok, runner)


class Repository:
    """Every valid model version under a root directory, keyed by name then version."""

    def __init__(self, models: list[Model], skipped: dict[str, str] | None = None) -> None:
        self.models: dict[str, dict[int, Model]] = {}
        for m in sorted(models, key=lambda m: (m.name, m.version)):
            self.models.setdefault(m.name, {})[m.version] = m
        self.skipped = skipped or {}  # path -> reason

    @classmethod
    def load(cls, root: str | Path, intra_op_threads: int = 0, inter_op_threads: int = 1) -> Repository:
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"model directory {root} does not exist")
        models, skipped = [], {}
        for version_dir in sorted(p for p in root.glob("*/*") if p.is_dir()):
            name = version_dir.parent.name
            if not version_dir.name.isdigit() or int(version_dir.name) <= 0:
                skipped[str(version_dir)] = "version directories must be positive integers"
            else:
                try:
                    models.append(load_model(version_dir, name, int(version_dir.name), intra_op_threads, inter_op_threads))
                    log.info("loaded %s version %s from %s", name, version_dir.name, version_dir)
                    continue
                except Exception as err:  # any broken artifact is skipped; the rest keep serving
                    skipped[str(version_dir)] = f"{type(err).__name__}: {err}"
            log.error("skipping %s: %s", version_dir, skipped[str(version_dir)])
        if not models:
            log.warning("no valid model under %s", root)
        return cls(models, skipped)

    def get(self, name: str, version: int = 0) -> Model:
        """The named version, or the latest when version is 0."""
        versions = self.models.get(name)
        if not versions:
            raise NotFound(f"model {name!r} is not loaded (available: {', '.join(sorted(self.models)) or 'none'})")
        if version == 0:
            return versions[max(versions)]
        if version not in versions:
            raise NotFound(f"model {name!r} has no version {version} (available: {sorted(versions)})")
        return versions[version]

    def latest(self, model: Model) -> bool:
        return model.version == max(self.models[model.name])

    def all(self) -> list[Model]:
        return [m for versions in self.models.values() for m in versions.values()]
