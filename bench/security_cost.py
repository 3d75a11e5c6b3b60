"""What TLS, mutual TLS and the token check cost: unary latency and one stream's characters/s, side by side.

    python -m bench.security_cost --model-dir models --model shakespeare-gru [--calls 1000] [--chars 20000]

One server process per configuration (plain, token, TLS, TLS + token, mutual TLS + token), with
certificates made by trustme; the configurations are measured in turn, twice, in alternating order,
and each figure is the better of its two rounds, so load from outside shifts all of them alike.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import trustme

from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc

TOKEN = "bench-token-0123456789abcdef"
CONFIGS = ("plain", "token", "tls", "tls+token", "mtls+token")


class Files:
    def __init__(self, root: Path) -> None:
        ca, client_ca = trustme.CA(), trustme.CA()
        leaf, client = ca.issue_cert("localhost"), client_ca.issue_cert("bench.client")
        self.paths = {}
        for name, blob in {"ca": ca.cert_pem.bytes(), "cert": b"".join(b.bytes() for b in leaf.cert_chain_pems),
                           "key": leaf.private_key_pem.bytes(), "client_ca": client_ca.cert_pem.bytes(),
                           "client_cert": b"".join(b.bytes() for b in client.cert_chain_pems),
                           "client_key": client.private_key_pem.bytes(), "tokens": TOKEN.encode() + b"\n"}.items():
            (root / name).write_bytes(blob)
            self.paths[name] = str(root / name)

    def flags(self, config: str) -> list[str]:
        p, out = self.paths, []
        if "tls" in config:
            out += ["--tls-cert-file", p["cert"], "--tls-key-file", p["key"]]
        if config.startswith("mtls"):
            out += ["--tls-client-ca-file", p["client_ca"]]
        if "token" in config:
            out += ["--auth-token-file", p["tokens"]]
        return out

    def channel(self, config: str, port: int) -> grpc.Channel:
        if "tls" not in config:
            return grpc.insecure_channel(f"localhost:{port}")
        read = lambda name: Path(self.paths[name]).read_bytes()  # noqa: E731
        mutual = config.startswith("mtls")
        creds = grpc.ssl_channel_credentials(read("ca"), read("client_key") if mutual else None,
                                             read("client_cert") if mutual else None)
        return grpc.secure_channel(f"localhost:{port}", creds)


def measure(files: Files, config: str, a: argparse.Namespace) -> tuple[float, float]:
    """(p50 GetModel latency in ms, Generate characters/s) against a fresh server with this configuration."""
    proc = subprocess.Popen([sys.executable, "-m", "service", "--model-dir", a.model_dir, "--host", "localhost",
                             "--port", "0", "--metrics-port", "-1",
                             "--http-port", "-1", "--intra-op-threads", "1", *files.flags(config)],
                            stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in proc.stderr:
            if m := re.search(r"on port (\d+)", line):
                port = int(m.group(1))
                break
        if port is None:
            raise SystemExit(f"{config}: the server did not start")
        metadata = (("authorization", f"Bearer {TOKEN}"),) if "token" in config else None
        with files.channel(config, port) as channel:
            stub = pb_grpc.InferenceStub(channel)
            ask = pb.GetModelRequest(name=a.model)
            for _ in range(20):  # connection, handshake, warm-up
                stub.GetModel(ask, timeout=30, metadata=metadata)
            latencies = []
            for _ in range(a.calls):
                t0 = time.perf_counter()
                stub.GetModel(ask, timeout=30, metadata=metadata)
                latencies.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            n = sum(len(r.text) for r in stub.Generate(
                pb.GenerateRequest(model=a.model, prompt="A", max_tokens=a.chars, seed=1), timeout=300, metadata=metadata))
            return statistics.median(latencies) * 1e3, n / (time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default="models")
    p.add_argument("--model", default="shakespeare-gru")
    p.add_argument("--calls", type=int, default=1000, help="GetModel calls per configuration and round")
    p.add_argument("--chars", type=int, default=20_000, help="characters of the Generate stream")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = Files(Path(tmp))
        best: dict[str, tuple[float, float]] = {}
        for order in (CONFIGS, CONFIGS[::-1]):
            for config in order:
                ms, cps = measure(files, config, a)
                old = best.get(config, (float("inf"), 0.0))
                best[config] = (min(old[0], ms), max(old[1], cps))
    base_ms, base_cps = best["plain"]
    print(f"{'config':<12} {'GetModel p50 ms':>16} {'x plain':>8} {'Generate chars/s':>17} {'x plain':>8}")
    for config in CONFIGS:
        ms, cps = best[config]
        print(f"{config:<12} {ms:>16.3f} {ms / base_ms:>8.2f} {cps:>17.0f} {cps / base_cps:>8.2f}")


if __name__ == "__main__":
    main()
