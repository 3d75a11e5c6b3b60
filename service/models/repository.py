"""The model repository: <root>/<name>/<version>/ artifacts, each validated and loaded, broken ones skipped."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from service import artifact, kinds
from service.artifact import Meta, shown
from service.errors import NotFound
from service.models.model import Model

log = logging.getLogger("rnnserve")


def load_model(path: Path, name: str, version: int, intra_op_threads: int = 0, inter_op_threads: int = 1) -> Model:
    """Load one artifact directory <root>/<name>/<version>/; raises ValueError/OSError saying what is wrong with it.

    Every file is read through artifact.read_member (inside <root>, size-capped) and parsed from
    those bytes: ONNX Runtime gets the graph as bytes and never opens a path itself. The model's
    kind (service/kinds/) makes its runner from the graph(s) its artifact holds.
    """
    meta = Meta.parse(artifact.read_member(path, artifact.META_FILE))
    kind = kinds.get(meta.kind)
    tok = kind.read_tokenizer(path, meta)
    threads = intra_op_threads or meta.runtime.get("intra_op_num_threads", 1)
    runner = kind.load(path, meta, tok, threads, inter_op_threads)
    runner.self_check()
    return Model(name, version, path, meta, tok, runner)


# What a directory must be called to be loaded. Names travel in requests, metrics labels and log lines:
# ASCII letters, digits and ._- only, never leading with a dot (no "..", no hidden entries).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
VERSION = re.compile(r"[1-9][0-9]{0,8}")  # a positive integer without leading zeros; fits the proto's uint32


def _escapes(entry: Path, real_root: Path) -> str | None:
    """Why `entry` may not be used when it leads outside the repository (a symlink out, a loop), else None."""
    try:
        target = entry.resolve(strict=True)
    except (OSError, RuntimeError) as err:  # a dangling link, a link loop, a permission denied
        return f"cannot resolve it: {type(err).__name__}: {err}"
    if not target.is_relative_to(real_root):
        return f"it resolves to {shown(target)}, outside the repository {shown(real_root)}"
    return None


def _entries(directory: Path) -> list[Path]:
    """The visible entries of a directory, sorted; dot entries (.git, Kubernetes' ..data) are not models."""
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


def scan(root: Path) -> tuple[list[tuple[str, int, Path]], dict[str, str]]:
    """The <root>/<name>/<version>/ directories worth loading, and the reason each other entry is skipped.

    Only looks at directory entries (opens no file): a name or version that breaks the rules, or an
    entry that leads outside the root, is skipped with its reason. Plain files beside the model
    directories (a README) are not models and are passed over quietly. It logs nothing: a caller
    that polls decides when a skip is news.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"model directory {shown(root)} does not exist")
    real_root = root.resolve()
    candidates: list[tuple[str, int, Path]] = []
    skipped: dict[str, str] = {}

    for name_dir in _entries(root):
        if reason := _escapes(name_dir, real_root):
            skipped[str(name_dir)] = reason
            continue
        if not name_dir.is_dir():
            continue
        if not NAME.fullmatch(name_dir.name):
            skipped[str(name_dir)] = "model names are 1-128 ASCII letters, digits, '.', '_' or '-', not starting with '.'"
            continue
        try:
            versions = _entries(name_dir)
        except OSError as err:
            skipped[str(name_dir)] = f"cannot list it: {type(err).__name__}: {err}"
            continue
        for version_dir in versions:
            if reason := _escapes(version_dir, real_root):
                skipped[str(version_dir)] = reason
            elif not version_dir.is_dir():
                continue
            elif not VERSION.fullmatch(version_dir.name):
                skipped[str(version_dir)] = "version directories must be positive integers (1-999999999, no leading zeros)"
            else:
                candidates.append((name_dir.name, int(version_dir.name), version_dir))
    return candidates, skipped


class Repository:
    """Every valid model version under a root directory, keyed by name then version."""

    def __init__(self, models: list[Model], skipped: dict[str, str] | None = None,
                 unloadable: set[str] | None = None) -> None:
        self.models: dict[str, dict[int, Model]] = {}
        for m in sorted(models, key=lambda m: (m.name, m.version)):
            self.models.setdefault(m.name, {})[m.version] = m
        self.skipped = skipped or {}  # path -> reason
        self.unloadable = unloadable or set()  # the skipped paths whose files failed to load (the rest failed scan)

    @classmethod
    def load(cls, root: str | Path, intra_op_threads: int = 0, inter_op_threads: int = 1) -> Repository:
        """scan() the root, then load_model() each candidate; a broken one is skipped with one log line."""
        candidates, skipped = scan(Path(root))
        for path, reason in skipped.items():
            log.error("skipping %s: %s", shown(path), reason)
        models, unloadable = [], set()
        for name, version, path in candidates:
            try:
                models.append(load_model(path, name, version, intra_op_threads, inter_op_threads))
                log.info("loaded %s version %d from %s", name, version, shown(path))
            except Exception as err:  # any broken artifact is skipped; the rest keep serving
                skipped[str(path)] = shown(f"{type(err).__name__}: {err}")  # one line, whatever the library said
                unloadable.add(str(path))
                log.error("skipping %s: %s", shown(path), skipped[str(path)])
        if not models:
            log.warning("no valid model under %s", shown(Path(root)))
        return cls(models, skipped, unloadable)

    def default(self, name: str) -> int:
        """The version served when a request names none: the latest, passing over int8 versions whose seeded text
        depends on the batch (meta.json says so), which serve only when named; the latest if every version does."""
        versions = self.models[name]
        promised = [v for v, m in versions.items()
                    if m.meta.evaluation.get("quantization", {}).get("seeded_text_batch_independent", True)]
        return max(promised or versions)

    def trace_version(self, name: str) -> int:
        """The version a Trace that names none reads: the default one or, when that is quantized (Trace recomputes
        the fp32 graph's cell), the loaded fp32 version it was made from; 0 for a name not loaded (get: NOT_FOUND)."""
        if name not in self.models:
            return 0
        model = self.models[name][self.default(name)]
        source = model.meta.evaluation.get("quantization", {}).get("from_version")
        fp32 = [v for v, m in self.models[name].items() if str(v) == source and m.meta.precision == "fp32"]
        return fp32[0] if model.meta.precision != "fp32" and fp32 else model.version

    def get(self, name: str, version: int = 0) -> Model:
        """The named version, or the default one (see default) when version is 0."""
        versions = self.models.get(name)  # a dict lookup: a name from a request never reaches the filesystem
        if not versions:
            raise NotFound(f"model {name!r:.80} is not loaded (available: {', '.join(sorted(self.models)) or 'none'})")
        if version == 0:
            return versions[self.default(name)]
        if version not in versions:
            raise NotFound(f"model {name!r:.80} has no version {version} (available: {sorted(versions)})")
        return versions[version]

    def latest(self, model: Model) -> bool:
        """Whether `model` is the version served when a request names none (ModelInfo.latest)."""
        return model.version == self.default(model.name)

    def all(self) -> list[Model]:
        return [m for versions in self.models.values() for m in versions.values()]

    def add(self, model: Model) -> None:
        """Serve a version (replacing a loaded copy of the same version); names stay sorted for listings."""
        versions = {**self.models.get(model.name, {}), model.version: model}
        self.models[model.name] = dict(sorted(versions.items()))
        self.models = dict(sorted(self.models.items()))

    def remove(self, name: str, version: int) -> None:
        """Stop serving a version; a name with no version left is no longer listed."""
        del self.models[name][version]
        if not self.models[name]:
            del self.models[name]
