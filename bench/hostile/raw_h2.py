"""Raw HTTP/2 that a gRPC library would never send: streams held open past the server's announced cap, from an
address of their own (127.0.0.2: another client as far as the server and nginx's per-address limits can tell)."""

from __future__ import annotations

import socket
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

ATTACKER = "127.0.0.2"


def grpc_headers(host: str, path: str) -> list[tuple[str, str]]:
    return [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", host),
            ("content-type", "application/grpc"), ("te", "trailers")]


def ignore_stream_cap(conn: h2.connection.H2Connection) -> None:
    """Forget the server's MAX_CONCURRENT_STREAMS, as a hostile client would: the server must refuse the excess."""
    conn.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 2 ** 31 - 1
    conn.remote_settings.acknowledge()


class IdleStreams:
    """n streams of `path` on one connection, each sent `body` (then half-closed) or nothing, and held open without
    reading a byte of their replies. A thread answers the server's SETTINGS and PINGs and counts the streams the
    server ends (refused: reset, or trailers with a status) until close()."""

    def __init__(self, host: str, port: int, path: str, n: int, body: bytes | None) -> None:
        self.sock = socket.create_connection((host, port), timeout=30, source_address=(ATTACKER, 0))
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.refused, self.closed_by_server = 0, False
        self.stopping = threading.Event()
        for _ in range(n):
            sid = self.conn.get_next_available_stream_id()
            ignore_stream_cap(self.conn)
            self.conn.send_headers(sid, grpc_headers(host, path))
            if body is not None:
                self.conn.send_data(sid, body, end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        self.sock.settimeout(0.5)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopping.is_set():
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                self.closed_by_server = True
                return
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closed_by_server = True
                return
            self.refused += sum(isinstance(e, h2.events.StreamReset | h2.events.StreamEnded) for e in events)
            self.closed_by_server |= any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
            try:
                self.sock.sendall(self.conn.data_to_send())  # SETTINGS and PING acknowledgements; no window for replies
            except OSError:
                return

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()
