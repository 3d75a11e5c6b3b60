"""Who may talk to the server: TLS (optionally mutual) on the gRPC port, and the bearer-token interceptor."""

from __future__ import annotations

import hashlib
import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence

import grpc

from service import metrics
from service.settings import Settings

log = logging.getLogger("rnnserve")

OPEN_PREFIX = "/grpc.health.v1.Health/"  # probes and load balancers carry no token
MIN_TOKEN_CHARS = 16
MISSING = "missing bearer token: send the metadata 'authorization: Bearer <token>'"
INVALID = "invalid token"


def _read(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise ValueError(f"setting {setting}: cannot read {path!r}: {err.strerror}") from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files (None: plain h2c); client certificates required with a client CA.

    The files are checked with the ssl module first: grpc takes unparsable PEM or a key that does
    not match its certificate without complaint and then fails every handshake.
    """
    if not settings.tls_cert_file:
        return None
    cert, key = _read(settings.tls_cert_file, "tls_cert_file"), _read(settings.tls_key_file, "tls_key_file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.tls_cert_file, settings.tls_key_file, password=lambda: b"")
    except ssl.SSLError as err:
        raise ValueError(f"settings tls_cert_file / tls_key_file: not a PEM certificate and its unencrypted private "
                         f"key ({err.reason or err})") from None
    client_ca = None
    if settings.tls_client_ca_file:
        client_ca = _read(settings.tls_client_ca_file, "tls_client_ca_file")
        try:
            ssl.create_default_context().load_verify_locations(cadata=client_ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as err:
            raise ValueError(f"setting tls_client_ca_file: {settings.tls_client_ca_file!r} holds no PEM CA "
                             f"certificate ({err})") from None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def bind(server: grpc.aio.Server, settings: Settings) -> int:
    """Listen on the settings' address, with TLS when configured; returns the bound port."""
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    port = server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    log.info("gRPC port %d: %s", port, "plain h2c" if credentials is None else
             "mutual TLS" if settings.tls_client_ca_file else "TLS")
    return port


def load_tokens(path: str) -> list[bytes]:
    """The accepted tokens of a token file: one per line, blank lines ignored. Errors name the line, never the token."""
    try:
        text = _read(path, "auth_token_file").decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"setting auth_token_file: {path!r} is not UTF-8 text") from None
    tokens = []
    for n, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token:
            continue
        if len(token) < MIN_TOKEN_CHARS or not (token.isascii() and token.isprintable()) or " " in token:
            raise ValueError(f"setting auth_token_file: line {n} of {path!r}: a token is at least {MIN_TOKEN_CHARS} "
                             "printable ASCII characters without spaces")
        tokens.append(token.encode())
    if not tokens:
        raise ValueError(f"setting auth_token_file: {path!r} holds no token")
    return tokens


def _deny(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    """A handler of the method's own shape that ends the call with UNAUTHENTICATED.

    It has no request deserializer: an unauthenticated client's bytes never reach the protobuf parser.
    """
    async def abort(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is None:  # an unknown method: the client learns nothing about it without a token
        return grpc.unary_unary_rpc_method_handler(abort)
    make = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}
    return make[handler.request_streaming, handler.response_streaming](
        abort, response_serializer=handler.response_serializer)


class TokenAuth(grpc.aio.ServerInterceptor):
    """Every RPC but grpc.health.v1.Health/* needs 'authorization: Bearer <token>' with an accepted token."""

    def __init__(self, tokens: Sequence[bytes]) -> None:
        # Compared as SHA-256 digests: equal lengths, so compare_digest's time says nothing about a token's length.
        self._digests = [hashlib.sha256(t).digest() for t in tokens]

    def accepts(self, token: bytes) -> bool:
        digest, ok = hashlib.sha256(token).digest(), False
        for accepted in self._digests:  # all of them, no early exit: the time does not tell which one matched
            ok |= hmac.compare_digest(digest, accepted)
        return ok

    def refusal(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """Why a call with this metadata is refused (None: it is not)."""
        value = next((v for k, v in metadata or () if k == "authorization"), None)
        scheme, _, token = value.partition(" ") if isinstance(value, str) else ("", "", "")
        if scheme.lower() != "bearer" or not token.strip():
            return MISSING
        return None if self.accepts(token.strip().encode()) else INVALID

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if details.method.startswith(OPEN_PREFIX):
            return handler
        why = self.refusal(details.invocation_metadata)
        if why is None:
            return handler
        # An unknown method is counted as "unknown": a client must not create label values at will.
        metrics.count_refused(details.method.rpartition("/")[2] if handler is not None else "unknown",
                              grpc.StatusCode.UNAUTHENTICATED.name)
        return _deny(handler, why)


def interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """The server's interceptors: the token check when a token file is set, else none."""
    if not settings.auth_token_file:
        return []
    tokens = load_tokens(settings.auth_token_file)
    log.info("bearer-token authentication: %d accepted token(s) from %s", len(tokens), settings.auth_token_file)
    return [TokenAuth(tokens)]
