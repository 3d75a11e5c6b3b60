"""TLS, mutual TLS and bearer tokens: real certificates made here, real servers, real secure channels, the real CLI."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service.api.security import INVALID, MISSING, TokenAuth, load_tokens, server_credentials
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc
from service.settings import Settings
from tests.support.data import ROOT
from tests.support.harness import Running, pb, pb_grpc, settings

TOKEN, NEXT_TOKEN = "s3cret-token-0123456789abcdef", "rotated-token-fedcba9876543210"
WRONG = "wrong-token-0123456789abcdefgh"


class Pki:
    """A server CA with a 'localhost' certificate, a client CA with a client certificate, and a stranger CA."""

    def __init__(self, root: Path) -> None:
        self.root = root
        ca, client_ca, self.stranger = trustme.CA(), trustme.CA(), trustme.CA()
        self.ca = self._write("ca.pem", ca.cert_pem.bytes())
        leaf = ca.issue_cert("localhost", "127.0.0.1", "::1")
        self.cert = self._write("server.pem", b"".join(b.bytes() for b in leaf.cert_chain_pems))
        self.key = self._write("server.key", leaf.private_key_pem.bytes())
        self.client_ca = self._write("client-ca.pem", client_ca.cert_pem.bytes())
        client = client_ca.issue_cert("client.example")
        self.client_cert = self._write("client.pem", b"".join(b.bytes() for b in client.cert_chain_pems))
        self.client_key = self._write("client.key", client.private_key_pem.bytes())
        fake = self.stranger.issue_cert("client.example")
        self.fake_cert = self._write("fake.pem", fake.cert_chain_pems[0].bytes())
        self.fake_key = self._write("fake.key", fake.private_key_pem.bytes())
        self.stranger_ca = self._write("stranger.pem", self.stranger.cert_pem.bytes())
        self.tokens = self._write("tokens", f"{TOKEN}\n\n{NEXT_TOKEN}\n".encode())

    def _write(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return str(self.root / name)

    def channel(self, port: int, ca: str | None = None, cert: str | None = None, key: str | None = None) -> grpc.Channel:
        read = lambda p: Path(p).read_bytes() if p else None  # noqa: E731
        creds = grpc.ssl_channel_credentials(read(ca or self.ca), read(key), read(cert))
        return grpc.secure_channel(f"localhost:{port}", creds)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured(model_repo, pki):
    """TLS + tokens: the server and a TLS channel that trusts its CA (calls carry no token by themselves)."""
    running = Running(settings(model_repo, tls_cert_file=pki.cert, tls_key_file=pki.key, auth_token_file=pki.tokens))
    channel = pki.channel(running.port)
    yield running, channel
    channel.close()
    running.stop()


@pytest.fixture(scope="module")
def mutual(model_repo, pki):
    running = Running(settings(model_repo, tls_cert_file=pki.cert, tls_key_file=pki.key,
                               tls_client_ca_file=pki.client_ca))
    yield running
    running.stop()


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def _generate(channel: grpc.Channel, **kw) -> str:
    replies = pb_grpc.InferenceStub(channel).Generate(
        pb.GenerateRequest(model="tiny-lstm", prompt="A", max_tokens=20, seed=1), timeout=60, **kw)
    return "".join(r.text for r in replies)


def _reflect(channel: grpc.Channel, **kw) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30, **kw)
    return [s.name for r in replies for s in r.list_services_response.service]


def _calls(channel: grpc.Channel) -> dict:
    """One call of each protected kind: native streaming and unary, Admin, v2 unary, reflection (bidirectional)."""
    stub, v2_stub = pb_grpc.InferenceStub(channel), v2_grpc.GRPCInferenceServiceStub(channel)
    admin = pb_grpc.AdminStub(channel)
    return {
        "Generate": lambda **kw: _generate(channel, **kw),
        "Classify": lambda **kw: stub.Classify(pb.ClassifyRequest(model="tiny-sentiment", texts=["fine"]), timeout=30, **kw),
        "ListModels": lambda **kw: stub.ListModels(pb.ListModelsRequest(), timeout=30, **kw),
        "ReloadModels": lambda **kw: admin.ReloadModels(pb.ReloadModelsRequest(), timeout=30, **kw),
        "ModelInfer": lambda **kw: v2_stub.ModelInfer(v2.ModelInferRequest(model_name="tiny-sentiment"), timeout=30, **kw),
        "ServerReflectionInfo": lambda **kw: _reflect(channel, **kw),
    }


def test_valid_tokens_over_tls_are_served_both_during_a_rotation(secured):
    _, channel = secured
    assert len(_generate(channel, metadata=bearer(TOKEN))) == 20
    assert _generate(channel, metadata=bearer(NEXT_TOKEN)) == _generate(channel, metadata=bearer(TOKEN))
    reply = pb_grpc.InferenceStub(channel).Classify(pb.ClassifyRequest(model="tiny-sentiment", texts=["fine"]),
                                                   timeout=30, metadata=(("authorization", f"bearer  {TOKEN} "),))
    assert len(reply.results) == 1
    assert "rnnserve.v1.Inference" in _reflect(channel, metadata=bearer(TOKEN))


@pytest.mark.parametrize("metadata, message", [
    (None, MISSING),
    ((("authorization", f"Basic {TOKEN}"),), MISSING),
    ((("authorization", "Bearer "),), MISSING),
    (bearer(WRONG), INVALID),
    (bearer(TOKEN[:-1]), INVALID),
    (bearer(TOKEN + "x"), INVALID),
], ids=["none", "basic", "empty", "wrong", "prefix", "longer"])
def test_every_protected_method_refuses_a_missing_or_wrong_token(secured, metadata, message):
    running, channel = secured
    for method, call in _calls(channel).items():
        before = running.metric("rnnserve_requests_total", method=method, code="UNAUTHENTICATED")
        code, details = _code(lambda: call(metadata=metadata))  # noqa: B023
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, message), method
        assert TOKEN not in details and WRONG not in details
        assert running.metric("rnnserve_requests_total", method=method, code="UNAUTHENTICATED") == before + 1, method


def test_an_unknown_method_without_a_token_is_unauthenticated_and_counted_as_unknown(secured):
    running, channel = secured
    before = running.metric("rnnserve_requests_total", method="unknown", code="UNAUTHENTICATED")
    call = channel.unary_unary("/rnnserve.v1.Inference/NoSuchMethod")
    assert _code(lambda: call(b"", timeout=30))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: call(b"", timeout=30, metadata=bearer(TOKEN)))[0] == grpc.StatusCode.UNIMPLEMENTED
    assert running.metric("rnnserve_requests_total", method="unknown", code="UNAUTHENTICATED") == before + 1


def test_an_unauthenticated_request_is_never_parsed(secured):
    """Bytes that are no protobuf message get UNAUTHENTICATED, not a parse error: the parser never sees them."""
    _, channel = secured
    for method in ("/rnnserve.v1.Inference/Classify", "/rnnserve.v1.Inference/Generate"):
        call = channel.unary_unary(method) if method.endswith("Classify") else channel.unary_stream(method)
        code, details = _code(lambda: list(call(b"\xff\xff\xff", timeout=30)))  # noqa: B023
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, MISSING), method


def test_health_answers_without_a_token(secured):
    _, channel = secured
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "rnnserve.v1.Inference", "rnnserve.v1.Inference/tiny-lstm"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30).status == \
            health_pb2.HealthCheckResponse.SERVING


def test_the_token_never_reaches_the_log(secured, caplog):
    _, channel = secured
    with caplog.at_level(logging.DEBUG):
        _generate(channel, metadata=bearer(TOKEN))
        _code(lambda: _generate(channel, metadata=bearer(WRONG)))
    assert TOKEN not in caplog.text and WRONG not in caplog.text


def test_plain_text_and_untrusting_clients_cannot_talk_to_a_tls_server(secured, pki):
    running, _ = secured
    with grpc.insecure_channel(f"localhost:{running.port}") as plain:
        assert _code(lambda: _generate(plain, metadata=bearer(TOKEN)))[0] == grpc.StatusCode.UNAVAILABLE
    with pki.channel(running.port, ca=pki.stranger_ca) as untrusting:  # the server's certificate is not from its CA
        assert _code(lambda: _generate(untrusting, metadata=bearer(TOKEN)))[0] == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(mutual, pki):
    with pki.channel(mutual.port, cert=pki.client_cert, key=pki.client_key) as ok:
        assert len(_generate(ok)) == 20
    with pki.channel(mutual.port) as anonymous:
        assert _code(lambda: _generate(anonymous))[0] == grpc.StatusCode.UNAVAILABLE
    with pki.channel(mutual.port, cert=pki.fake_cert, key=pki.fake_key) as stranger:
        assert _code(lambda: _generate(stranger))[0] == grpc.StatusCode.UNAVAILABLE


def test_half_configured_tls_is_a_settings_error(pki):
    with pytest.raises(ValueError, match="tls_cert_file and tls_key_file go together"):
        Settings(tls_cert_file=pki.cert)
    with pytest.raises(ValueError, match="tls_cert_file and tls_key_file go together"):
        Settings(tls_key_file=pki.key)
    with pytest.raises(ValueError, match=r"tls_client_ca_file .* needs TLS"):
        Settings(tls_client_ca_file=pki.client_ca)


@pytest.mark.parametrize("files, message", [
    ({"tls_key_file": "/nonexistent/server.key"}, "tls_key_file: cannot read '/nonexistent/server.key'"),
    ({"tls_cert_file": "KEY"}, "not a PEM certificate and its unencrypted private key"),  # a key for a certificate
    ({"tls_key_file": "OTHER_KEY"}, "not a PEM certificate and its unencrypted private key"),  # not the cert's key
    ({"tls_client_ca_file": "KEY"}, "tls_client_ca_file: .* holds no PEM CA certificate"),
])
def test_unusable_tls_files_are_clear_errors(pki, files, message):
    named = {"KEY": pki.key, "OTHER_KEY": pki.client_key}
    files = {k: named.get(v, v) for k, v in files.items()}
    s = Settings(**{"tls_cert_file": pki.cert, "tls_key_file": pki.key, **files})
    with pytest.raises(ValueError, match=message):
        server_credentials(s)


def test_token_files_are_checked_and_errors_never_show_a_token(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"  {TOKEN}  \n\n{NEXT_TOKEN}\n")
    assert load_tokens(str(path)) == [TOKEN.encode(), NEXT_TOKEN.encode()]
    for text, message in [("\n \n", "holds no token"), (f"{TOKEN}\nshort-secret\n", "line 2 of .*: a token is at least 16"),
                          ("two words in-one-token-line\n", "line 1 of"), ("tab\tinside-a-long-token\n", "line 1 of")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message) as info:
            load_tokens(str(path))
        assert "short-secret" not in str(info.value) and "in-one-token-line" not in str(info.value)
    with pytest.raises(ValueError, match="cannot read"):
        load_tokens(str(tmp_path / "missing"))


def test_token_comparison_accepts_exactly_the_listed_tokens():
    auth = TokenAuth([TOKEN.encode(), NEXT_TOKEN.encode()])
    assert auth.accepts(TOKEN.encode()) and auth.accepts(NEXT_TOKEN.encode())
    assert not any(auth.accepts(t.encode()) for t in (WRONG, "", TOKEN[:-1], TOKEN + TOKEN, TOKEN.upper()))


@pytest.mark.process
def test_the_server_process_refuses_to_start_with_a_missing_key_file(model_repo, pki):
    r = subprocess.run([sys.executable, "-m", "service", "--model-dir", str(model_repo), "--port", "0",
                        "--metrics-port", "-1", "--http-port", "-1",
                        "--tls-cert-file", pki.cert, "--tls-key-file", str(pki.root / "nope.key")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert f"error: setting tls_key_file: cannot read '{pki.root / 'nope.key'}'" in r.stderr


def _client(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "RNNSERVE_CLIENT_TOKEN"} | (env or {})
    return subprocess.run([sys.executable, "-m", "service.client", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=environ)


def test_cli_client_talks_to_a_tls_and_token_server(secured, pki):
    running, _ = secured
    target = ("--target", f"localhost:{running.port}", "--tls-ca", pki.ca, "--timeout", "60")
    r = _client(*target, "--token-file", pki.tokens, "generate", "--model", "tiny-lstm", "ROMEO:", "-n", "20", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ROMEO:") and len(r.stdout.rstrip("\n")) == len("ROMEO:") + 20
    r = _client(*target, "classify", "--model", "tiny-sentiment", "fine", env={"RNNSERVE_CLIENT_TOKEN": NEXT_TOKEN})
    assert r.returncode == 0 and r.stdout.endswith("\tfine\n"), r.stderr
    r = _client(*target, "models")
    assert r.returncode == 1 and f"error: UNAUTHENTICATED: {MISSING}" in r.stderr
    r = _client(*target, "models", env={"RNNSERVE_CLIENT_TOKEN": WRONG})
    assert r.returncode == 1 and f"error: UNAUTHENTICATED: {INVALID}" in r.stderr


def test_cli_client_speaks_mutual_tls(mutual, pki):
    target = ("--target", f"localhost:{mutual.port}", "--tls-ca", pki.ca, "--timeout", "60")
    r = _client(*target, "--tls-cert", pki.client_cert, "--tls-key", pki.client_key, "models")
    assert r.returncode == 0 and '"name": "tiny-lstm"' in r.stdout, r.stderr
    r = _client(*target, "models")
    assert r.returncode == 1 and "error: UNAVAILABLE" in r.stderr


def test_cli_client_tls_flags_turn_tls_on_and_go_in_pairs(serve, pki):
    plain = serve()
    target = ("--target", f"localhost:{plain.port}", "--timeout", "30")
    assert _client(*target, "models").returncode == 0
    r = _client(*target, "--tls", "models")  # the system's CAs, over TLS: a plain-text server cannot answer
    assert r.returncode == 1 and "error: UNAVAILABLE" in r.stderr
    r = _client(*target, "--tls-cert", pki.client_cert, "models")
    assert r.returncode == 1 and "--tls-cert and --tls-key go together" in r.stderr


@pytest.mark.process
def test_the_image_health_probe_speaks_tls_and_mutual_tls(secured, mutual, pki):
    probe = str(ROOT / "deploy" / "grpc_health_probe.py")

    def run(port: int, *flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, probe, "--addr", f"127.0.0.1:{port}", "--timeout", "30", *flags],
                              capture_output=True, text=True, timeout=60)

    tls_port = secured[0].port
    r = run(tls_port, "--tls-ca", pki.ca, "--server-name", "localhost")  # health: open without a token
    assert r.returncode == 0 and "SERVING" in r.stdout, r.stderr
    assert run(tls_port).returncode == 1  # plain text cannot talk to it
    r = run(mutual.port, "--tls-ca", pki.ca, "--tls-cert", pki.client_cert, "--tls-key", pki.client_key)
    assert r.returncode == 0 and "SERVING" in r.stdout, r.stderr
    assert run(mutual.port, "--tls-ca", pki.ca).returncode == 1  # mutual TLS: no client certificate, no answer
