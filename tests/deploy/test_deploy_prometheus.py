"""deploy/prometheus with a real Prometheus scraping a real rnnserve process; the Grafana dashboard's queries against it."""

from __future__ import annotations

import json
import shutil
import subprocess

import grpc
import pytest
import yaml

from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from tests.deploy.conftest import DEPLOY, free_port, generate, http_get, process, promql, require, wait_until

pytestmark = pytest.mark.process  # runs nginx, Prometheus and rnnserve replicas as processes on loopback

MODEL = "tiny-lstm"


@pytest.fixture
def prometheus(replicas, tmp_path):
    """One replica, and Prometheus with the deploy config: the replica's address instead of DNS discovery."""
    require("prometheus", "promtool")
    (replica,) = replicas(1)
    port = free_port()
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")  # the deploy's 5 s, sped up for the test
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    del jobs["rnnserve"]["dns_sd_configs"]
    jobs["rnnserve"]["static_configs"] = [{"targets": [f"127.0.0.1:{replica.metrics_port}"]}]
    jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    shutil.copy(DEPLOY / "prometheus" / "rules.yml", tmp_path / "rules.yml")
    check = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    args = ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    with process(args, tmp_path / "prometheus.log"):
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: "Ready" in http_get(f"{base}/-/ready"), 60, "Prometheus to be ready")
        wait_until(lambda: promql(base, 'up{job="rnnserve"} == 1'), 30, "a first scrape of the replica")
        yield base, replica


def stream_some(replica, n: int = 4, max_tokens: int = 150) -> int:
    with grpc.insecure_channel(replica.target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        return sum(generate(stub, MODEL, max_tokens)[1] for _ in range(n))


def test_prometheus_counts_the_characters_generated(prometheus):
    base, replica = prometheus
    generated = stream_some(replica)
    assert generated == 600
    query = f'sum(rnnserve_generated_chars_total{{job="rnnserve", model="{MODEL}"}})'
    wait_until(lambda: [float(r["value"][1]) for r in promql(base, query)] == [generated], 30,
               f"{query} == {generated}")
    rate = promql(base, f'sum(rate(rnnserve_generated_chars_total{{model="{MODEL}"}}[1m]))')
    assert float(rate[0]["value"][1]) > 0
    # The recording rule of rules.yml, evaluated by this Prometheus.
    wait_until(lambda: promql(base, f'model:rnnserve_generated_chars:rate1m{{model="{MODEL}"}} > 0'), 30,
               "the recording rule")
    rules = json.loads(http_get(f"{base}/api/v1/rules"))["data"]["groups"]
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules


def test_every_dashboard_query_runs(prometheus):
    """Each panel's PromQL, with Grafana's variables filled in, is accepted; traffic panels have data."""
    base, replica = prometheus
    stream_some(replica, n=2, max_tokens=100)
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "rnnserve.json").read_text())
    exprs = {(panel["title"], target["refId"]): target["expr"].replace("$model", ".*").replace("$__rate_interval", "1m")
             for panel in dash["panels"] for target in panel["targets"]}
    # A rate needs two scrapes after the traffic.
    wait_until(lambda: promql(base, exprs[("Throughput (generated characters/s)", "A")] + " > 0"), 30, "throughput")
    results = {key: promql(base, expr) for key, expr in exprs.items()}
    for title in ("Throughput (generated characters/s)", "Time to first character p50 / p99",
                  "Inter-character latency p50 / p99", "Active and queued streams", "Batch sizes", "Replicas up"):
        assert results[(title, "A")], f"panel {title!r} shows no data"
