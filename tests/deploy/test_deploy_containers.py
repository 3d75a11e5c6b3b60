"""The compose stack for real, bounded in time: images built with podman on a base made from Debian's packages,
the training image trains a model into the shared directory, `podman-compose up` of the real docker-compose.yml,
generation streamed through nginx from the host, both replicas serving, one stopped and requests still served.

Slow (minutes the first time: debootstrap, image builds); marked `container`: pytest -m "not container" leaves it out.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from tests.deploy.conftest import DEPLOY, ROOT, generate, health, metric, promql, require, wait_until

pytestmark = [pytest.mark.container, pytest.mark.timeout(1500)]

PROJECT = "rnnserve-ci"
DATA = ROOT.parent / "shared" / "data"
MODEL = "tiny-lm"  # trained by the train service in this test, served by the replicas
# Host ports (127.0.0.1 only), apart from anything the in-process tests bind (they take free ports from the kernel).
PORTS = {"GRPC_PORT": 18480, "HTTP_PORT": 18482, "LB_STATUS_PORT": 18481, "PROMETHEUS_PORT": 18490, "GRAFANA_PORT": 18430}
LB = f"127.0.0.1:{PORTS['GRPC_PORT']}"
PROMETHEUS = f"http://127.0.0.1:{PORTS['PROMETHEUS_PORT']}"
REPLICAS = [f"{PROJECT}_rnnserve_1", f"{PROJECT}_rnnserve_2"]


def sh(args: list[str], timeout: float, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The environment of every podman / podman-compose call: local images, loopback ports, a models directory."""
    require("podman", "podman-compose", "debootstrap", "runc")
    if os.geteuid() != 0:
        pytest.skip("the container test runs podman as root (as CI does)")
    for port in PORTS.values():
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                pytest.fail(f"port {port} on 127.0.0.1 is taken: the container test publishes there")
    models = tmp_path_factory.mktemp("compose-models")
    os.chown(models, 10001, 10001)  # the images' user: training writes here, replicas read
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")},
            **{k: str(v) for k, v in PORTS.items()},
            "CONTAINERS_CONF": str(DEPLOY / "podman-containers.conf"), "BUILDAH_FORMAT": "docker",
            "BASE_IMAGE": "localhost/rnnserve-base:bookworm", "NGINX_IMAGE": "localhost/rnnserve-nginx:bookworm",
            "PROMETHEUS_IMAGE": "localhost/rnnserve-prometheus:bookworm", "TAG": "ci", "BIND_ADDR": "127.0.0.1",
            "MODELS_DIR": str(models), "DATA_DIR": str(DATA),
            # the tests read a replica's counters right after their requests: no cached rendering, no rate limit
            "RNNSERVE_METRICS_CACHE_S": "0", "RNNSERVE_METRICS_MAX_PER_S": "1000"}


def compose(env: dict, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return sh(["podman-compose", "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"), *args], timeout, env, check)


def podman(env: dict, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    return sh(["podman", *args], timeout, env, check)


def down(env: dict) -> None:
    compose(env, "down", "-v", "-t", "5", timeout=180, check=False)
    podman(env, "network", "rm", "-f", f"{PROJECT}_default", check=False)


@pytest.fixture(scope="module")
def timings() -> Iterator[dict]:
    t = {}
    yield t
    print("\ncontainer test timings (s):", json.dumps(t))


@pytest.fixture(scope="module")
def images(env: dict, timings: dict) -> dict:
    """Base images from Debian's packages, the wheelhouses, then both images built by podman-compose (compose's build:)."""
    t0 = time.monotonic()
    sh([str(DEPLOY / "local-images.sh")], 900, env)
    timings["local_images"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    sh(["make", "-s", "wheels"], 600, env)
    timings["wheels"] = round(time.monotonic() - t0, 1)
    for service in ("rnnserve", "train"):
        t0 = time.monotonic()
        compose(env, "build", service, timeout=900)
        timings[f"build_{service}"] = round(time.monotonic() - t0, 1)
    image = f"localhost/rnnserve:{env['TAG']}"
    inspect = json.loads(podman(env, "image", "inspect", image).stdout)[0]
    timings["rnnserve_image_mb"] = round(inspect["Size"] / 1e6)
    timings["train_image_mb"] = round(json.loads(podman(env, "image", "inspect", f"localhost/rnnserve-train:{env['TAG']}")
                                                 .stdout)[0]["Size"] / 1e6)
    return inspect


def test_service_image_is_slim_and_non_root(env, images):
    assert images["Config"]["User"] == "10001:10001"
    assert images["Healthcheck"]["Test"] == ["CMD", "python", "/app/grpc_health_probe.py"]  # kept: docker format
    r = podman(env, "run", "--rm", "--entrypoint", "python", f"localhost/rnnserve:{env['TAG']}", "-c",
               "import importlib.util as u; print(u.find_spec('torch') is None, u.find_spec('onnxruntime') is not None)")
    assert r.stdout.split() == ["True", "True"], "the service image has onnxruntime and no torch"


@pytest.fixture(scope="module")
def trained(env: dict, images, timings: dict) -> Path:
    """The optional train service: trains a recipe and exports it into the directory the replicas mount."""
    if not (DATA / "tinyshakespeare" / "input.txt").exists():
        pytest.fail(f"no training data at {DATA}")
    t0 = time.monotonic()
    compose(env, "run", "--no-deps", "--rm", "-T", "train", "tiny-lm", "--max_steps=30", timeout=600)
    timings["train_run"] = round(time.monotonic() - t0, 1)
    out = Path(env["MODELS_DIR"]) / MODEL / "1"
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.onnx", "tokenizer.json"], "export failed"
    return out


@pytest.fixture(scope="module")
def stack(env: dict, trained, timings: dict) -> Iterator[dict]:
    """rnnserve x2 + nginx + Prometheus from the real docker-compose.yml (Grafana's image cannot be had here)."""
    down(env)
    t0 = time.monotonic()
    try:
        compose(env, "up", "-d", "--no-build", "rnnserve", "nginx", "prometheus", timeout=300)
        timings["compose_up"] = round(time.monotonic() - t0, 1)
        wait_until(lambda: first_generation(LB), 120, "a first generation through nginx", 0.2)
        timings["up_to_first_served_request"] = round(time.monotonic() - t0, 1)
        yield env
    except BaseException:
        for name in [*REPLICAS, f"{PROJECT}_nginx_1", f"{PROJECT}_prometheus_1"]:
            print(f"--- {name}\n{podman(env, 'logs', '--tail', '30', name, check=False).stderr[-2000:]}")
        raise
    finally:
        t0 = time.monotonic()
        down(env)
        timings["down"] = round(time.monotonic() - t0, 1)
        label = f"label=io.podman.compose.project={PROJECT}"
        assert not podman(env, "ps", "-a", "--filter", label, "-q").stdout.strip(), "containers left behind"
        assert not podman(env, "volume", "ls", "--filter", label, "-q").stdout.strip(), "volumes left behind"
        assert podman(env, "network", "exists", f"{PROJECT}_default", check=False).returncode != 0, "network left"


def first_generation(target: str) -> bool:
    """A fresh channel each try: a channel that failed to connect backs off for seconds before its next attempt."""
    with grpc.insecure_channel(target) as channel:
        return bool(generate(pb_grpc.InferenceStub(channel), MODEL, 5, timeout=5)[1])


def replica_metrics(env: dict, name: str) -> str:
    return podman(env, "exec", name, "python", "-c",
                  "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9090/metrics').read().decode())"
                  ).stdout


def test_streams_through_nginx_are_spread_over_both_replicas(stack):
    assert health(LB) == "SERVING"
    assert health(LB, f"rnnserve.v1.Inference/{MODEL}") == "SERVING"
    before = {name: metric(replica_metrics(stack, name), "rnnserve_generated_chars_total", model=MODEL)
              for name in REPLICAS}
    # One channel = one HTTP/2 connection to nginx: only per-request balancing can spread its streams.
    with grpc.insecure_channel(LB) as channel:
        stub = pb_grpc.InferenceStub(channel)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: generate(stub, MODEL, 300, timeout=60), range(8)))
    assert all(len(text) == n == 300 for text, n in results)
    served = {name: metric(replica_metrics(stack, name), "rnnserve_generated_chars_total", model=MODEL) - before[name]
              for name in REPLICAS}
    assert all(chars >= 300 for chars in served.values()), served
    assert sum(served.values()) == 8 * 300, served


def test_prometheus_scrapes_both_replicas(stack):
    wait_until(lambda: len(promql(PROMETHEUS, 'up{job="rnnserve"} == 1')) == 2, 60, "Prometheus to find both replicas")
    total = sum(metric(replica_metrics(stack, name), "rnnserve_generated_chars_total", model=MODEL) for name in REPLICAS)
    wait_until(lambda: [float(r["value"][1]) for r in promql(
        PROMETHEUS, f'sum(rnnserve_generated_chars_total{{job="rnnserve", model="{MODEL}"}})')] == [total],
        30, f"Prometheus to count the {total} characters the replicas generated")


def test_images_health_check_and_nginx_config_inside_the_stack(stack):
    for name in REPLICAS:
        assert podman(stack, "healthcheck", "run", name, check=False).returncode == 0, name
    assert podman(stack, "exec", REPLICAS[0], "id", "-u").stdout.strip() == "10001"
    assert podman(stack, "exec", REPLICAS[0], "touch", "/models/x", check=False).returncode != 0, "models are read-only"
    r = podman(stack, "exec", f"{PROJECT}_nginx_1", "nginx", "-t", check=False)
    assert r.returncode == 0, r.stderr  # the real file, resolving the real service name


def test_requests_still_succeed_with_one_replica_stopped(stack):
    stopped, alive = REPLICAS[1], REPLICAS[0]
    before = metric(replica_metrics(stack, alive), "rnnserve_generated_chars_total", model=MODEL)
    podman(stack, "stop", "-t", "30", stopped, timeout=60)
    with grpc.insecure_channel(LB) as channel:
        stub = pb_grpc.InferenceStub(channel)
        results = [generate(stub, MODEL, 100, timeout=30) for _ in range(6)]
    assert all(n == 100 for _, n in results)
    assert metric(replica_metrics(stack, alive), "rnnserve_generated_chars_total", model=MODEL) == before + 600
    assert health(LB) == "SERVING"


def test_a_restarted_replica_serves_again(stack, timings):
    """Start-up time of one replica: from `podman start` to its first served generation (the client runs inside it)."""
    name = REPLICAS[1]
    if podman(stack, "inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true":
        podman(stack, "stop", "-t", "30", name, timeout=60)
    t0 = time.monotonic()
    podman(stack, "start", name)
    client = ["exec", name, "python", "-m", "service.client", "--timeout", "5", "generate", "--model", MODEL, "-n", "5",
              "ROMEO:"]
    wait_until(lambda: podman(stack, *client, check=False).returncode == 0, 120, f"{name} to serve again", 0.05)
    timings["replica_start_to_first_served_request"] = round(time.monotonic() - t0, 2)


def test_models_baked_in_by_build_argument(env, images):
    """--build-arg MODELS=models copies the repository's bundled models into the image: it serves them unmounted."""
    bundled = sorted(p.parent.parent.name for p in (ROOT / "models").glob("*/*/meta.json"))
    if not bundled:
        pytest.skip("no bundled models under models/ to bake in")
    image = f"localhost/rnnserve:{env['TAG']}-baked"
    podman(env, "build", "-q", "-f", "deploy/rnnserve.Dockerfile", "--build-arg", f"BASE_IMAGE={env['BASE_IMAGE']}",
           "--build-arg", "MODELS=models", "-t", image, ".", timeout=600)
    try:
        r = podman(env, "run", "--rm", "--entrypoint", "sh", image, "-c",
                   "python -m service --port 50099 --metrics-port -1 & "
                   "for i in $(seq 100); do python /app/grpc_health_probe.py --addr 127.0.0.1:50099 >/dev/null && break; "
                   "sleep 0.3; done; python -m service.client --target 127.0.0.1:50099 models", timeout=120)
        served = sorted({json.loads(line)["name"] for line in r.stdout.splitlines() if line.startswith("{")})
        assert served == sorted(set(bundled)), r.stdout + r.stderr
    finally:
        podman(env, "rmi", image, check=False)
