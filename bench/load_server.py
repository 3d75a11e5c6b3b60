"""What the load generator points at: a server process it starts (or one already running), its /metrics and RSS."""

from __future__ import annotations

import collections
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from bench.serve_bench import ServerProcess


@dataclass(frozen=True)
class Target:
    address: str  # host:port of the gRPC server
    metrics: str | None = None  # host:port of its /metrics, when known
    pid: int | None = None  # its process, when local: for RSS

    def scrape(self) -> list:
        """Every sample of a fresh /metrics scrape ([] without a metrics address)."""
        if self.metrics is None:
            return []
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as r:
            text = r.read().decode()
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def histogram(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """Cumulative (le, count) buckets of one histogram summed over the label values not given (e.g. versions),
        in the shape bench.serve_bench.quantile takes."""
        buckets: collections.Counter[float] = collections.Counter()
        for s in self.scrape():
            if s.name == f"{name}_bucket" and all(s.labels.get(k) == v for k, v in labels.items()):
                buckets[float(s.labels["le"])] += s.value
        return sorted(buckets.items())

    def load_gauges(self) -> dict[str, float]:
        """Streams holding a slot and requests waiting, all models: 0 on an idle server."""
        samples = self.scrape()
        active = sum(s.value for s in samples if s.name == "rnnserve_active_streams")
        queued = sum(s.value for s in samples if s.name == "rnnserve_queued_requests")
        return {"active_streams": active, "queued_requests": queued}

    def settle(self, timeout: float = 60.0) -> dict[str, float]:
        """Wait (up to timeout) for the load gauges to reach zero; returns what they read last."""
        end = time.monotonic() + timeout
        while True:
            gauges = self.load_gauges()
            if not any(gauges.values()) or time.monotonic() > end:
                return gauges
            time.sleep(0.1)

    def alive(self) -> bool:
        """False once the server process has exited (True when the process is not known)."""
        if self.pid is None:
            return True
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    def cpu_s(self) -> float | None:
        """User + system CPU seconds the server process has used so far; None when the process is not known."""
        if self.pid is None:
            return None
        with open(f"/proc/{self.pid}/stat") as f:
            utime, stime = f.read().rsplit(")", 1)[1].split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float | None:
        """Resident set size of the server process (VmRSS), in MB; None when the process is not known."""
        if self.pid is None:
            return None
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024  # kB
        return None


@contextmanager
def target(model_dir: str, flags: list[str], address: str | None = None, metrics: str | None = None,
           pid: int | None = None) -> Iterator[Target]:
    """A server process over model_dir started with flags (free ports, metrics on), or the given address as is."""
    if address is not None:
        yield Target(address, metrics, pid)
        return
    with ServerProcess(model_dir, *flags) as srv:
        # The log goes on after start-up; read it so a full pipe never blocks the server. Its tail is kept.
        tail: collections.deque[str] = collections.deque(maxlen=200)
        threading.Thread(target=lambda: tail.extend(srv.proc.stderr), daemon=True).start()
        try:
            yield Target(f"localhost:{srv.port}", f"localhost:{srv.metrics_port}", srv.proc.pid)
        finally:
            if srv.proc.poll() is not None:
                print(f"server exited with {srv.proc.returncode}; its log ends:\n{''.join(tail)}")
