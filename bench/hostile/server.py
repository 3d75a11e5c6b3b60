"""The server under attack: `python -m service` on free ports in a memory cgroup, optionally behind a real nginx."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.failover import NGINX_CONF, free_port, nginx_config, wait_serving

ROOT = Path(__file__).resolve().parent.parent.parent
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2"}  # as the image


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (clock ticks of 10 ms)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


class Server:
    """python -m service on free ports, in a memory cgroup of memory_mb when one can be made."""

    def __init__(self, model_dir: str, flags: list[str], memory_mb: int) -> None:
        self.group = _cgroup(memory_mb)
        procs = None if self.group is None else str(self.group / "cgroup.procs")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--model-dir", model_dir, "--host", "127.0.0.1", "--port", "0",
             "--health-port", "0", "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--http-port", "-1",
             "--intra-op-threads", "1", *flags],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **MALLOC},
            preexec_fn=None if procs is None else lambda: Path(procs).write_text("0"))
        self.log: list[str] = []
        stderr = self.proc.stderr
        threading.Thread(target=lambda: self.log.extend(stderr or ()), daemon=True).start()
        try:
            self.port, self.metrics_port, self.health_port = self._ports()
            self.target = f"127.0.0.1:{self.port}"
            wait_serving(self.target, 120, self.proc)
        except BaseException:
            self.close()
            raise

    def _ports(self) -> tuple[int, int, int]:
        end = time.monotonic() + 120
        while time.monotonic() < end and self.proc.poll() is None:
            for line in list(self.log):
                if m := re.search(r"on port (\d+), HTTP on port -?\d+, metrics on port (-?\d+), health on port (-?\d+)",
                                  line):
                    return int(m[1]), int(m[2]), int(m[3])
            time.sleep(0.1)
        raise RuntimeError(f"the server did not start: {''.join(self.log)[-2000:]}")

    def status(self, key: str) -> float:
        """VmRSS / VmHWM in MB, or 0 once the process is gone."""
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        m = re.search(rf"{key}:\s+(\d+)", text)
        return 0.0 if m is None else int(m[1]) / 1024

    def cpu_s(self) -> float:
        return cpu_s(self.proc.pid)

    def summary(self) -> dict:
        return {"alive": self.proc.poll() is None, "killed": self.proc.returncode == -9,
                "peak_rss_mb": round(self.status("VmHWM")), "rss_mb": round(self.status("VmRSS")),
                "errors_logged": sum("ERROR" in line for line in self.log)}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        if self.group is not None:
            time.sleep(0.2)
            self.group.rmdir()


def _cgroup(memory_mb: int) -> Path | None:
    try:
        own = next(line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                   if line.split(":")[1] == "memory")
        group = Path("/sys/fs/cgroup/memory") / own.lstrip("/") / f"rnnserve-hostile-{time.monotonic_ns()}"
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(memory_mb << 20))
        return group
    except (OSError, StopIteration, IndexError):
        return None


@dataclass
class Site:
    """What the clients attack: the server itself, or nginx in front of it (nginx_pid set)."""

    server: Server
    target: str  # host:port the clients call
    nginx_pid: int | None = None

    @property
    def via(self) -> str:
        return "direct" if self.nginx_pid is None else "nginx"


@contextmanager
def served(args: argparse.Namespace, flags: list[str]) -> Iterator[Site]:
    """A server started with flags, and with --through-nginx a real nginx on deploy/nginx/nginx.conf in front of it
    (only its addresses and file locations changed, as bench/failover.py runs it)."""
    server = Server(args.model_dir, flags, args.memory_limit_mb)
    try:
        if not args.through_nginx:
            yield Site(server, server.target)
            return
        with tempfile.TemporaryDirectory(prefix="hostile-nginx-") as tmp:
            port = free_port()
            # The HTTP upstream is never called (the replica's HTTP is off); nginx needs an address for it.
            conf = nginx_config(NGINX_CONF, Path(tmp), [server.target], port, free_port(), ["127.0.0.1:9"],
                                free_port())
            nginx = subprocess.Popen(["nginx", "-p", tmp, "-e", f"{tmp}/error.log", "-c", str(conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_serving(f"127.0.0.1:{port}", 30, nginx)
                yield Site(server, f"127.0.0.1:{port}", nginx.pid)
            finally:
                nginx.terminate()
                nginx.wait(15)
    finally:
        server.close()
