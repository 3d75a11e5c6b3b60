"""Deployment files checked by the tools that read them: docker-compose, podman-compose, promtool, Kubernetes schemas."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.metrics import REGISTRY
from tests.deploy.conftest import DEPLOY, ROOT, require

COMPOSE = ROOT / "docker-compose.yml"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))


def run(args: list[str], env_extra: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """A tool run on the files as committed: no compose variables from the caller's environment but env_extra."""
    compose_vars = {v for f in (COMPOSE, *DEPLOY.glob("compose.*.yml")) for v in re.findall(r"\$\{(\w+)", f.read_text())}
    env = {k: v for k, v in os.environ.items() if k not in compose_vars} | (env_extra or {})
    env["CONTAINERS_CONF"] = str(DEPLOY / "podman-containers.conf")
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env, **kwargs)


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file as docker-compose (Debian's 1.29) resolves it, train profile included."""
    require("docker-compose")
    r = run(["docker-compose", "-f", str(COMPOSE), "--profile", "train", "config"])
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


@pytest.mark.process
def test_compose_file_is_valid_for_docker_compose(compose):
    assert set(compose["services"]) == {"rnnserve", "nginx", "prometheus", "grafana", "train"}
    r = run(["docker-compose", "-f", str(COMPOSE), "config", "--quiet"])
    assert r.returncode == 0, r.stderr


@pytest.mark.process
def test_compose_runs_replicas_behind_the_balancer(compose):
    s = compose["services"]
    rnnserve = s["rnnserve"]
    assert rnnserve["deploy"]["replicas"] >= 2
    assert "ports" not in rnnserve, "replicas are reached through nginx, not published one by one"
    assert any(v["target"] == "/models" and v.get("read_only") for v in _volumes(rnnserve)), "models mount read-only"
    assert rnnserve["healthcheck"]["test"] == "python /app/grpc_health_probe.py"  # CMD-SHELL
    assert rnnserve["build"]["args"]["BASE_IMAGE"] == "python:3.11-slim"
    assert s["train"]["build"]["args"]["BASE_IMAGE"] == "python:3.11-slim"
    assert s["train"]["profiles"] == ["train"]
    train_models = next(v for v in _volumes(s["train"]) if v["target"] == "/models")
    assert train_models["source"] == next(v for v in _volumes(rnnserve) if v["target"] == "/models")["source"]
    assert not train_models.get("read_only"), "training writes into the directory the replicas read"
    for name, svc in s.items():
        assert "limits" in svc.get("deploy", {}).get("resources", {}), f"{name} has no resource limits"
        assert svc.get("restart") == ("no" if name == "train" else "unless-stopped"), name
        for p in _ports(svc):
            assert p["host_ip"] == "127.0.0.1", f"{name} publishes {p} beyond loopback by default"
    assert {p["target"] for p in _ports(s["nginx"])} == {8000, 8080, 8081}


@pytest.mark.process
def test_compose_mounts_existing_config_files(compose):
    for name, svc in compose["services"].items():
        for v in _volumes(svc):
            if v["type"] == "bind" and str(ROOT) in v["source"]:
                assert Path(v["source"]).exists(), f"{name} mounts missing {v['source']}"


@pytest.mark.process
def test_podman_compose_reads_the_file_as_intended(tmp_path):
    """podman-compose 1.0.3 has no `config`: its dry run shows the podman commands it would run.

    The dry run still creates the project's network and volumes (nothing else): they are removed after.
    """
    require("podman", "podman-compose")
    try:
        r = run(["podman-compose", "--dry-run", "-p", "rnnserve-dry", "-f", str(COMPOSE), "up", "-d", "--no-build",
                 "rnnserve", "nginx", "prometheus", "grafana"])
    finally:
        run(["podman", "network", "rm", "-f", "rnnserve-dry_default"])
        run(["podman", "volume", "rm", "-f", "rnnserve-dry_prometheus-data", "rnnserve-dry_grafana-data"])
    assert r.returncode == 0, r.stdout + r.stderr
    runs = [line for line in r.stdout.splitlines() if line.startswith("podman run")]
    replicas = [line for line in runs if "--name=rnnserve-dry_rnnserve_" in line]
    assert len(replicas) == 2, r.stdout
    for line in replicas:
        assert "--network-alias rnnserve" in line  # how nginx and Prometheus find every replica
        assert "--healthcheck-command" in line and "grpc_health_probe.py" in line
        assert "-m 1280m" in line and "--cpus 1.0" in line
        assert re.search(r"-v \S+:/models:ro", line)
    assert any("-p 127.0.0.1:8080:8080" in line for line in runs)


def _volumes(svc: dict) -> list[dict]:
    """docker-compose 1.29 prints volumes in the short form SOURCE:TARGET[:MODE]."""
    out = []
    for v in svc.get("volumes", []):
        source, target, *mode = v.split(":")
        out.append({"source": source, "target": target, "read_only": mode == ["ro"],
                    "type": "bind" if source.startswith("/") else "volume"})
    return out


def _ports(svc: dict) -> list[dict]:
    """... and ports as HOST_IP:PUBLISHED:TARGET/PROTOCOL."""
    out = []
    for p in svc.get("ports", []):
        host_ip, published, target = p.split("/")[0].rsplit(":", 2)
        out.append({"host_ip": host_ip, "published": int(published), "target": int(target)})
    return out


@pytest.mark.process
def test_prometheus_config_and_rules_pass_promtool():
    require("promtool")
    r = run(["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout + r.stderr
    r = run(["promtool", "check", "rules", str(DEPLOY / "prometheus" / "rules.yml")])
    assert r.returncode == 0, r.stdout + r.stderr


def test_prometheus_scrapes_every_replica_not_the_balancer():
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "rnnserve")
    assert job["dns_sd_configs"] == [{"names": ["rnnserve"], "type": "A", "port": 9090, "refresh_interval": "10s"}]


@pytest.mark.process
def test_kubernetes_manifests_match_the_api_schemas():
    """kubernetes-validate (PyPI) checks each resource against the API's JSON schemas, unknown fields included."""
    exe = Path(sys.executable).parent / "kubernetes-validate"
    for version in ("1.27.0", "1.37.0"):  # native gRPC probes are GA from 1.27
        r = run([str(exe), "--strict", "-k", version, *map(str, K8S)])
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count("passed") == 6, r.stdout


@pytest.mark.process
def test_kubernetes_validation_rejects_a_misspelt_field(tmp_path):
    """The validator really reads the schemas: a typo that YAML accepts fails."""
    text = (DEPLOY / "k8s" / "deployment.yaml").read_text().replace("readinessProbe:", "readinesProbe:")
    (tmp_path / "bad.yaml").write_text(text)
    r = run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "-k", "1.27.0",
             str(tmp_path / "bad.yaml")])
    assert r.returncode != 0 and "readinesProbe" in r.stdout + r.stderr


def test_kubernetes_probes_use_grpc_health():
    pod = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == 50052, probe  # the health port: a full gRPC port cannot fail them
    assert c["readinessProbe"]["grpc"]["service"] == "rnnserve.v1.Inference"
    assert pod["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    assert next(v for v in c["volumeMounts"] if v["mountPath"] == "/models")["readOnly"]


def test_grafana_dashboard_is_provisioned_from_files():
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "rnnserve.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "rnnserve.json").read_text())
    titles = " | ".join(p["title"] for p in dash["panels"])
    for wanted in ("Throughput", "Time to first character", "Inter-character latency p50 / p99", "Active",
                   "Batch sizes", "Error rate by code"):
        assert wanted in titles
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == source["uid"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]


def test_dashboard_and_rules_name_only_metrics_the_service_exports():
    families = {family.name for family in REGISTRY.collect()}
    exported = families | {f"{n}_{suffix}" for n in families for suffix in ("bucket", "sum", "count", "total")}
    exprs = [t["expr"] for p in json.loads((DEPLOY / "grafana" / "dashboards" / "rnnserve.json").read_text())["panels"]
             for t in p["targets"]]
    exprs += [r["expr"] for g in yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"]
              for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"\b(rnnserve_[a-z_]+)", e)}
    assert used and used <= exported, used - exported


@pytest.mark.process
def test_the_service_runs_as_non_root_with_a_read_only_model_directory(compose):
    """Image, compose and Kubernetes agree: uid 10001, no root, no capabilities, models and root filesystem read-only."""
    users = re.findall(r"^USER\s+(\S+)", (DEPLOY / "rnnserve.Dockerfile").read_text(), re.M)
    assert users[-1] == "10001:10001", "the image's last USER is the numeric non-root uid (runAsNonRoot can check it)"

    svc = compose["services"]["rnnserve"]
    assert svc["user"] == "10001:10001" and svc["read_only"] is True
    assert svc["cap_drop"] == ["ALL"] and "no-new-privileges:true" in svc["security_opt"]
    assert next(v for v in _volumes(svc) if v["target"] == "/models")["read_only"]

    pod = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    mount = next(v for v in c["volumeMounts"] if v["mountPath"] == "/models")
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["readOnly"] is True
