"""A replica SIGKILLed behind real nginx under steady load: only requests on it fail, new requests succeed."""

from __future__ import annotations

import grpc
import pytest

from bench.failover import run
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from tests.deploy import test_deploy_nginx
from tests.deploy.conftest import generate, wait_until

pytestmark = pytest.mark.process  # runs nginx, Prometheus and rnnserve replicas as processes on loopback

balancer = test_deploy_nginx.balancer  # real nginx with the deploy config in front of two real replicas


def _all_succeed(target: str) -> bool:
    """Ten Generate streams and ten Classify requests in a row, every one whole."""
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        for _ in range(10):
            if generate(stub, "tiny-lstm", 50, timeout=10)[1] != 50:
                return False
            stub.Classify(pb.ClassifyRequest(model="tiny-sentiment", texts=["a fine film"]), timeout=10)
    return True


def test_a_killed_replica_fails_only_what_ran_on_it_and_new_requests_succeed(balancer):
    target, _, pair, _, _ = balancer
    done, t_kill = run(target, pair[0].proc, "tiny-lstm", "tiny-sentiment", streams=6, classifiers=3,
                       max_tokens=400, before_s=2.0, after_s=4.0)
    assert pair[0].proc.wait(10) == -9 and pair[1].proc.poll() is None

    assert "TRUNCATED_OK" not in {r.code for r in done}  # never a cut answer reported as OK
    after = [r for r in done if r.start >= t_kill]
    assert sum(r.code == "OK" for r in after) >= 10  # the survivor kept serving through nginx
    failed = [r for r in done if r.code != "OK"]
    # A stream already sending through nginx when its replica died is cut by nginx with RST_STREAM
    # (nginx cannot send gRPC trailers for a dead upstream): the client sees INTERNAL. Everything
    # else that failed, a request that had received nothing yet, got UNAVAILABLE: retry it.
    for r in failed:
        cut_mid_stream = r.method == "Generate" and r.messages > 0 and r.start < t_kill
        assert r.code == "UNAVAILABLE" or (cut_mid_stream and r.code == "INTERNAL" and "RST_STREAM" in r.details), r
    # Nothing that started after the kill fails for long: a generous wait until every new request succeeds.
    wait_until(lambda: _all_succeed(target), 60, "every new request through nginx to succeed")
    new_failures = [r for r in after if r.code != "OK"]
    print(f"\n[failover] {len(done)} requests, kill after 2 s: {len(failed) - len(new_failures)} in flight failed "
          f"({sorted(r.code for r in failed if r.start < t_kill)}), {len(new_failures)} of {len(after)} started after "
          f"the kill failed, the last {max((r.start for r in new_failures), default=t_kill) - t_kill:.3f} s after it")
