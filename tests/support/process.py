"""The real server process (`python -m service`, torch made unimportable) on free ports, its log lines collected."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

import grpc

from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from tests.support.data import ROOT

# `python -m service` with torch and training made unimportable: the service must never need them.
SERVE_WITHOUT_TORCH = ("import runpy, sys; sys.modules['torch'] = sys.modules['training'] = None; "
                       "runpy.run_module('service', run_name='__main__', alter_sys=True)")


class Process:
    """The server process on free ports; its log lines are collected from stderr."""

    def __init__(self, model_repo: Path, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE_WITHOUT_TORCH, "--model-dir", str(model_repo), "--host", "localhost",
             "--port", "0", "--metrics-port", "-1", "--http-host", "localhost", "--http-port", "0",
             "--intra-op-threads", "1", *flags],
            cwd=ROOT, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.proc.stderr], daemon=True).start()
        ports = self.wait_for(r"on port (\d+), HTTP on port (-?\d+)")
        self.port, self.http = int(ports.group(1)), f"http://localhost:{ports.group(2)}"
        self.channel = grpc.insecure_channel(f"localhost:{self.port}")
        self.stub = pb_grpc.InferenceStub(self.channel)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        while True:
            line = self.lines.get(timeout=timeout)
            if m := re.search(pattern, line):
                return m

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
