"""bench/hostile's own machinery, in front of real processes: with --through-nginx its clients really go through
nginx on the deploy config, and its raw HTTP/2 attacker comes from an address of its own."""

from __future__ import annotations

import argparse
import time

import pytest

from bench.hostile.raw_h2 import IdleStreams
from bench.hostile.server import served
from tests.deploy.conftest import health, require

pytestmark = pytest.mark.process  # runs rnnserve and nginx as processes on loopback


def test_through_nginx_the_attack_goes_through_a_real_nginx_to_the_server(model_repo):
    """It raised TypeError before: bench/failover.py's nginx_config had gained the HTTP upstream's arguments."""
    require("nginx")
    args = argparse.Namespace(model_dir=str(model_repo), memory_limit_mb=1024, through_nginx=True)
    with served(args, ["--max-streams-per-connection", "8"]) as site:
        assert site.via == "nginx" and site.target != site.server.target
        assert health(site.target) == "SERVING"
        host, port = site.target.rsplit(":", 1)
        attacker = IdleStreams(host, int(port), "/inference.GRPCInferenceService/ModelStreamInfer", 200, None)
        try:
            deadline = time.monotonic() + 30
            while attacker.refused < 200 - 128 and time.monotonic() < deadline:
                time.sleep(0.1)
            # nginx, not the replica (8 a connection), holds the streams: its own 128 a connection, the rest refused.
            assert attacker.refused == 200 - 128
            assert health(site.target) == "SERVING"
        finally:
            attacker.close()
