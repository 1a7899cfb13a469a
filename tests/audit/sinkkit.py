"""Real receivers for audit streaming tests: an HTTP webhook server and a TCP syslog server,
each on a loopback port in a thread of the test process."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SECRET = "s" * 16 + "-test-hmac-secret-0123456789"  # a test value, not a credential


class WebhookReceiver:
    """Records every POST (headers and body) and answers `status` (200 by default).
    `on_request(index)` runs before the answer: a test can kill the sender there."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.on_request: Callable[[int], None] | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers.items()), body))
                if receiver.on_request is not None:
                    receiver.on_request(len(receiver.requests))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def verified_batches(self, secret: str = SECRET) -> list[list[dict[str, Any]]]:
        """Every batch received, after checking its signature as docs/audit.md says to."""
        batches = []
        for headers, body in self.requests:
            signed = headers["X-KCM-Timestamp"].encode() + b"." + body
            mac = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["X-KCM-Signature"], f"sha256={mac}")
            assert headers["X-KCM-Delivery"]
            batches.append(json.loads(body))
        return batches


_HEADER = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    rb"(?P<msgid>\S+) (?P<sd>\[.*?(?<!\\)\]) \xef\xbb\xbf(?P<msg>.*)$",
    re.DOTALL,
)


def parse_frames(data: bytes) -> list[dict[str, Any]]:
    """Split octet-counted frames (RFC 6587) and parse each RFC 5424 message."""
    messages, rest = [], data
    while rest:
        length, _, rest = rest.partition(b" ")
        assert length.isdigit(), rest[:40]
        frame, rest = rest[: int(length)], rest[int(length) :]
        assert len(frame) == int(length), "truncated frame"
        match = _HEADER.match(frame)
        assert match, frame[:120]
        messages.append(
            {
                "pri": int(match["pri"]),
                "msgid": match["msgid"].decode(),
                "sd": match["sd"].decode(),
                "event": json.loads(match["msg"]),
            }
        )
    return messages


class SyslogReceiver:
    """A TCP (or, with `tls`, TLS) syslog server: each connection's bytes, parsed once the
    sender closes it. `port` reopens a closed receiver's port (a restarted receiver)."""

    def __init__(self, *, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self.tls = tls
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        chunks = []
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except ssl.SSLError:  # a client that does not trust us hangs up
                conn.close()
                return
        with conn:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        with self.lock:
            self.messages += parse_frames(b"".join(chunks))

    def close(self) -> None:
        # shutdown wakes the thread blocked in accept(); close alone leaves the port listening.
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


def closed_port() -> int:
    """A loopback port nothing listens on (connecting is refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SilentServer:
    """Accepts TCP connections and never answers: a sink that hangs, not one that refuses."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.listener.close()
