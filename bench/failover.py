"""A replica killed behind nginx: which requests fail, with which codes, and how long until every new one succeeds.

    python -m bench.failover --model-dir models --lm shakespeare-lstm --classifier sst2-bilstm
    python -m bench.failover --nginx-conf /tmp/before.conf ...   # the same run with another nginx config

Two `python -m service` replicas run behind nginx with deploy/nginx/nginx.conf (only its addresses
and file locations changed). Clients keep a steady load through nginx (Generate streams read to
their end, Classify requests) while replica 0 is SIGKILLed mid-load. Requests are sorted by when
they started: in flight at the kill (a stream already running on the killed replica cannot be
saved) or started after it (these should all succeed once nginx routes around the dead replica).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(target: str) -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def wait_serving(target: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while not serving(target):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}")
        if time.monotonic() > end:
            raise TimeoutError(f"{target} not SERVING after {timeout:.0f} s")
        time.sleep(0.1)


def nginx_config(source: Path, out_dir: Path, upstreams: list[str], grpc_port: int, status_port: int,
                 http_upstreams: list[str], http_port: int) -> Path:
    """The deploy config with only its addresses and file locations changed; each change must apply exactly once."""
    text = source.read_text()
    changes = [
        (r"server rnnserve:50051 ([^;]*);", "\n        ".join(rf"server {u} \1;" for u in upstreams)),
        (r"server rnnserve:8000 ([^;]*);", "\n        ".join(rf"server {u} \1;" for u in http_upstreams)),
        (r"listen 8000;", f"listen 127.0.0.1:{http_port};"),
        (r"listen 8080 http2;", f"listen 127.0.0.1:{grpc_port} http2;"),
        (r"listen 8081;", f"listen 127.0.0.1:{status_port};"),
        (r"pid /tmp/nginx.pid;", f"pid {out_dir}/nginx.pid;"),
        (r"access_log /dev/stdout grpc;", f"access_log {out_dir}/access.log grpc;"),
    ]
    for pattern, replacement in changes:
        text, n = re.subn(pattern, replacement, text)
        if n != 1:
            raise ValueError(f"{source} does not have exactly one `{pattern}`")
    path = out_dir / "nginx.conf"
    path.write_text(text)
    return path


@dataclass
class Request:
    method: str  # Generate or Classify
    start: float  # monotonic seconds
    end: float
    code: str  # a grpc.StatusCode name; OK only for a whole answer (a stream with its `finished` message)
    messages: int  # Generate: messages received before the end
    details: str = ""  # the error's message


class Load:
    """Threads that each send one request after another through one shared channel, until stopped."""

    def __init__(self, target: str, lm: str, classifier: str, streams: int, classifiers: int, max_tokens: int) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.InferenceStub(self.channel)
        self.lm, self.classifier, self.max_tokens = lm, classifier, max_tokens
        self.done: list[Request] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = ([threading.Thread(target=self._loop, args=(self._generate,), daemon=True) for _ in range(streams)]
                        + [threading.Thread(target=self._loop, args=(self._classify,), daemon=True)
                           for _ in range(classifiers)])

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(120)
        self.channel.close()

    def _loop(self, send) -> None:
        while not self.stopping.is_set():
            request = send()
            with self.lock:
                self.done.append(request)
            if request.code != "OK":
                time.sleep(0.02)  # a client's retry pause: failures do not spin

    def _generate(self) -> Request:
        t0, n, finished = time.monotonic(), 0, False
        try:
            for reply in self.stub.Generate(pb.GenerateRequest(model=self.lm, prompt="ROMEO:", max_tokens=self.max_tokens,
                                                               flush_chars=16), timeout=60):
                n += 1
                finished = finished or (reply.HasField("finished") and
                                        reply.finished.usage.generated_chars == self.max_tokens)
            code, details = ("OK" if finished else "TRUNCATED_OK"), ""  # OK without the whole text would be a bug
        except grpc.RpcError as err:
            code, details = err.code().name, err.details()
        return Request("Generate", t0, time.monotonic(), code, n, details)

    def _classify(self) -> Request:
        t0 = time.monotonic()
        try:
            reply = self.stub.Classify(pb.ClassifyRequest(model=self.classifier, texts=["a fine film", "dull"]), timeout=30)
            code, details = ("OK" if len(reply.results) == 2 else "TRUNCATED_OK"), ""
        except grpc.RpcError as err:
            code, details = err.code().name, err.details()
        return Request("Classify", t0, time.monotonic(), code, 0, details)


def summarize(done: list[Request], t_kill: float) -> dict:
    """Failures by when their request started (before the kill and still running at it, or after it), and recovery."""
    before = [r for r in done if r.start < t_kill <= r.end]
    after = [r for r in done if r.start >= t_kill]
    failed_after = [r for r in after if r.code != "OK"]

    def codes(rs: list[Request]) -> dict[str, int]:
        return dict(Counter(f"{r.method} {r.code}" for r in rs if r.code != "OK"))

    return {
        "requests": len(done),
        "ok_before_kill": sum(r.code == "OK" for r in done if r.end < t_kill),
        "in_flight_at_kill": len(before),
        "in_flight_failed": codes(before),
        "in_flight_streams_failed_after_first_message": sum(r.code != "OK" and r.messages > 0 for r in before),
        "started_after_kill": len(after),
        "started_after_kill_ok": sum(r.code == "OK" for r in after),
        "started_after_kill_failed": codes(after),
        # The last failure of a new request, from the kill: after it, every new request succeeded.
        "recovered_after_s": round(max((r.start for r in failed_after), default=t_kill) - t_kill, 3),
        "ok_after_last_failure": sum(r.code == "OK" for r in after
                                     if r.start > max((f.start for f in failed_after), default=t_kill)),
    }


def run(target: str, kill: subprocess.Popen, lm: str, classifier: str, streams: int, classifiers: int,
        max_tokens: int, before_s: float, after_s: float) -> tuple[list[Request], float]:
    """Steady load through target; SIGKILL `kill` after before_s; keep the load for after_s more.

    Returns every request and the time of the kill."""
    with Load(target, lm, classifier, streams, classifiers, max_tokens) as load:
        time.sleep(before_s)
        t_kill = time.monotonic()
        kill.send_signal(signal.SIGKILL)
        time.sleep(after_s)
    return load.done, t_kill


def start_replica(model_dir: str, log: Path) -> tuple[subprocess.Popen, str, str]:
    port, metrics_port, http_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")}
    env.update(RNNSERVE_MODEL_DIR=model_dir, RNNSERVE_HOST="127.0.0.1", RNNSERVE_PORT=str(port),
               RNNSERVE_METRICS_HOST="127.0.0.1", RNNSERVE_METRICS_PORT=str(metrics_port), RNNSERVE_GRACE_S="5",
               RNNSERVE_HTTP_HOST="127.0.0.1", RNNSERVE_HTTP_PORT=str(http_port))
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    return proc, f"127.0.0.1:{port}", f"127.0.0.1:{http_port}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", default="models")
    ap.add_argument("--lm", default="shakespeare-lstm")
    ap.add_argument("--classifier", default="sst2-bilstm")
    ap.add_argument("--nginx-conf", type=Path, default=NGINX_CONF)
    ap.add_argument("--streams", type=int, default=8, help="clients each running one Generate stream after another")
    ap.add_argument("--classifiers", type=int, default=4, help="clients each sending one Classify after another")
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--before-s", type=float, default=5.0, help="load before the kill")
    ap.add_argument("--after-s", type=float, default=10.0, help="load after the kill")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="failover-") as tmp_dir:
        tmp = Path(tmp_dir)
        replicas = [start_replica(args.model_dir, tmp / f"rnnserve-{i}.log") for i in range(2)]
        nginx = None
        try:
            for proc, target, _ in replicas:
                wait_serving(target, 120, proc)
            grpc_port, status_port = free_port(), free_port()
            conf = nginx_config(args.nginx_conf, tmp, [t for _, t, _ in replicas], grpc_port, status_port,
                                [h for _, _, h in replicas], free_port())
            nginx = subprocess.Popen(["nginx", "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf),
                                      "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            target = f"127.0.0.1:{grpc_port}"
            wait_serving(target, 30, nginx)
            summary = summarize(*run(target, replicas[0][0], args.lm, args.classifier, args.streams, args.classifiers,
                                     args.max_tokens, args.before_s, args.after_s))
        finally:
            if nginx is not None:
                nginx.terminate()
                nginx.wait(15)
            for proc, _, _ in replicas:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(30)
    print(json.dumps({**vars(args), "nginx_conf": str(args.nginx_conf), **summary}, indent=1))


if __name__ == "__main__":
    main()
