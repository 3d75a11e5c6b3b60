"""Token authentication as deployed: the compose override, and tokens passing through the real nginx balancer."""

from __future__ import annotations

import grpc
import pytest

from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from tests.deploy.conftest import DEPLOY, health, require
from tests.deploy.test_deploy_configs import COMPOSE, run
from tests.deploy.test_deploy_nginx import MODEL, behind_nginx

pytestmark = pytest.mark.process  # runs nginx, Prometheus and rnnserve replicas as processes on loopback

TOKEN = "deploy-test-token-0123456789"


@pytest.fixture
def tokens(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"{TOKEN}\n")
    return path


def test_the_auth_override_mounts_the_token_file_as_a_secret(tokens):
    require("docker-compose")
    files = ["docker-compose", "-f", str(COMPOSE), "-f", str(DEPLOY / "compose.auth.yml")]
    r = run([*files, "config"], env_extra={"TOKENS_FILE": str(tokens)})
    assert r.returncode == 0, r.stderr
    assert "RNNSERVE_AUTH_TOKEN_FILE: /run/secrets/rnnserve_tokens" in r.stdout and str(tokens) in r.stdout
    assert TOKEN not in r.stdout  # the secret's contents never appear in the resolved configuration
    r = run([*files, "config"])
    assert r.returncode != 0 and "set TOKENS_FILE" in r.stderr  # no silent deployment without tokens


def test_tokens_pass_through_nginx_and_health_stays_open(replicas, tokens, tmp_path, model_repo):
    pair = replicas(2, auth_token_file=str(tokens))
    with behind_nginx(pair, tmp_path) as (target, *_):
        assert health(target) == "SERVING"  # no token: probes and the balancer's own checks
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.InferenceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.ListModels(pb.ListModelsRequest(), timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                stub.ListModels(pb.ListModelsRequest(), timeout=30, metadata=(("authorization", "Bearer wrong-token-000000"),))
            assert (err.value.code(), err.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, "invalid token")
            authorized = (("authorization", f"Bearer {TOKEN}"),)
            for _ in range(4):  # least_conn spreads them: both replicas check the token
                replies = list(stub.Generate(pb.GenerateRequest(model=MODEL, prompt="A", max_tokens=40, seed=1),
                                             timeout=60, metadata=authorized))
                assert len("".join(r.text for r in replies)) == replies[-1].finished.usage.generated_chars == 40
            served = {p.parent.parent.name for p in model_repo.glob("*/*/meta.json")}
            assert {m.name for m in stub.ListModels(pb.ListModelsRequest(), timeout=30, metadata=authorized).models} == served
