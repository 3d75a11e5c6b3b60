"""Hot reload: bring the served model versions in line with the repository on disk without failing a request.

A reload reads the repository (in a worker thread, so serving goes on), loads the versions that
appeared or whose files changed, and only then swaps them in, in one step on the event loop: a
request sees either the old set or the new one, never a half-loaded version. A version that is
replaced or removed keeps its engine until the requests that started on it have finished, so a
running stream ends on the version it started with. A version that fails to load changes nothing:
the version it would replace keeps serving, and it is tried again once its files change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from service import artifact, metrics
from service.artifact import shown
from service.engine import Engine
from service.models.host import Key, ModelHost
from service.models.repository import Model, load_model, scan

log = logging.getLogger("rnnserve")

Signature = tuple[tuple[int, int] | None, ...]  # (size, mtime_ns) of each artifact file, None when missing
RETIRE_POLL_S = 0.05  # how often a retired engine is checked for requests still running on it


def signature(path: Path) -> Signature:
    """What identifies one copy of a version's files: a re-export into the same directory changes it."""
    out = []
    for name in (artifact.MODEL_FILE, artifact.TOKENIZER_FILE, artifact.META_FILE):
        try:
            st = (path / name).stat()
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _busy(engine: Engine) -> bool:
    return engine.n_open > 0


@dataclass
class ReloadReport:
    loaded: list[Key] = field(default_factory=list)
    unloaded: list[Key] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # version directory (relative) -> reason
    serving: list[Key] = field(default_factory=list)


class Reloader:
    """Swaps model versions in a running server (through its ModelHost) and retires the engines they replace."""

    def __init__(self, root: Path, host: ModelHost, published: Callable[[], Awaitable[None]],
                 intra_op_threads: int = 0, inter_op_threads: int = 1) -> None:
        self.root, self.host, self.published = Path(root), host, published
        self.threads = (intra_op_threads, inter_op_threads)
        repo = host.repo
        self.signatures: dict[Key, Signature] = {(m.name, m.version): signature(m.path) for m in repo.all()}
        # path -> the files that failed (None: refused by scan, before any file was read), and why; seeded
        # with the start-up load's refusals so that the first poll does not report them as news
        self.failures: dict[str, tuple[Signature | None, str]] = {
            path: (signature(Path(path)) if path in repo.unloadable else None, reason)
            for path, reason in repo.skipped.items()}
        self.retiring: dict[asyncio.Task, Engine] = {}  # drains of replaced or removed versions' engines
        self.lock = asyncio.Lock()

    async def reload(self) -> ReloadReport:
        """One reload; concurrent calls run one after the other."""
        async with self.lock:
            return await self._reload()

    async def _reload(self) -> ReloadReport:
        report = ReloadReport()
        candidates, skipped = await asyncio.to_thread(scan, self.root)
        on_disk = {(name, version): (path, await asyncio.to_thread(signature, path)) for name, version, path in candidates}
        for path, reason in skipped.items():
            self._failed(report, path, None, reason)
        fresh: list[Model] = []
        for key, (path, sig) in sorted(on_disk.items()):
            if self.signatures.get(key) == sig:
                continue
            if (seen := self.failures.get(str(path))) is not None and seen[0] == sig:
                report.failed[self._relative(path)] = seen[1]  # unchanged since it failed: not tried again
                continue
            try:
                fresh.append(await asyncio.to_thread(load_model, path, *key, *self.threads))
            except Exception as err:  # any broken artifact is refused; what it would replace keeps serving
                self._failed(report, path, sig, f"{type(err).__name__}: {err}")
                metrics.RELOADS.labels("failed").inc()
            else:
                self.failures.pop(str(path), None)
        gone = [key for key in self.signatures if key not in on_disk]
        present = {str(path) for path, _ in on_disk.values()} | set(skipped)
        self.failures = {path: seen for path, seen in self.failures.items() if path in present}

        # The swap: synchronous on the event loop, so no request sees a partial set.
        for model in fresh:
            key = (model.name, model.version)
            old = self.host.install(model)
            self.signatures[key] = on_disk[key][1]
            if old is not None:
                self._retire(key, old)
                report.unloaded.append(key)
            report.loaded.append(key)
            log.info("loaded %s version %d from %s", model.name, model.version, model.path)
        for key in gone:
            del self.signatures[key]
            self._retire(key, self.host.uninstall(key))
            report.unloaded.append(key)
        metrics.RELOADS.labels("loaded").inc(len(fresh))
        metrics.RELOADS.labels("unloaded").inc(len(report.unloaded))
        report.serving = sorted((m.name, m.version) for m in self.host.repo.all())
        if fresh or gone:
            await self.published()
        return report

    def _relative(self, path: str | Path) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def _failed(self, report: ReloadReport, path: str | Path, sig: Signature | None, reason: str) -> None:
        """Record a refused directory; log it once, not on every poll."""
        rel = self._relative(path)
        report.failed[rel] = reason
        if self.failures.get(str(path)) != (sig, reason):
            log.error("skipping %s: %s", shown(Path(path)), reason)
            self.failures[str(path)] = (sig, reason)

    def _retire(self, key: Key, engine: Engine) -> None:
        task = asyncio.get_running_loop().create_task(self._drain(key, engine))
        self.retiring[task] = engine
        task.add_done_callback(lambda t: self.retiring.pop(t, None))

    async def _drain(self, key: Key, engine: Engine) -> None:
        """Close a replaced or removed version's engine once the requests that started on it have ended."""
        while _busy(engine):
            await asyncio.sleep(RETIRE_POLL_S)
        await engine.close()
        log.info("unloaded %s version %d", *key)

    async def poll(self, interval_s: float) -> None:
        """Reload every interval_s seconds until cancelled; a failing reload is logged and tried again."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.reload()
            except Exception:
                log.exception("reloading the model repository failed")

    @property
    def n_open(self) -> int:
        """Requests still running on retired engines."""
        return sum(e.n_open for e in self.retiring.values())

    async def close(self) -> None:
        """At shutdown, after the server has drained its requests: close retired engines still waiting."""
        for task, engine in list(self.retiring.items()):
            task.cancel()
            await engine.close()
