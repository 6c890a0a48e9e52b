"""A real HTTP webhook receiver on 127.0.0.1 that records every request.

Why: Slack/Teams-style alert webhooks must be tested over a real socket with
real HTTP semantics (headers, JSON bodies, error statuses, slow answers for
timeout and retry logic), which a patched ``urlopen`` cannot show.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .ports import LOCALHOST


@dataclass
class RecordedRequest:
    """One request as received: method, path (with query), headers, raw body and parsed JSON."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any = None
    received_at: float = field(default_factory=time.time)

    def header(self, name: str, default: str | None = None) -> str | None:
        """Case-insensitive header lookup."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), default)


class WebhookServer:
    """ThreadingHTTPServer on 127.0.0.1:``port`` that answers every request with ``status``.

    Attributes you may set while it runs: ``status`` (default 200),
    ``response_body`` (bytes), ``delay`` (seconds before answering, for
    client-timeout tests). ``queue_statuses([500, 500, 200])`` answers the next
    requests with those codes in order, then falls back to ``status``.
    """

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.response_body: bytes = b'{"ok": true}'
        self.delay = 0.0
        self.requests: list[RecordedRequest] = []
        self._queued: deque[int] = deque()
        self._cond = threading.Condition()
        self._httpd = ThreadingHTTPServer((LOCALHOST, 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.host = LOCALHOST
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (append any path you like)."""
        return f"http://{self.host}:{self.port}"

    def queue_statuses(self, statuses: Iterable[int]) -> None:
        """Answer the next requests with these statuses, in order (retry tests)."""
        with self._cond:
            self._queued.extend(statuses)

    def _next_status(self) -> int:
        with self._cond:
            return self._queued.popleft() if self._queued else self.status

    def _record(self, req: RecordedRequest) -> None:
        with self._cond:
            self.requests.append(req)
            self._cond.notify_all()

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests arrived; return them all. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"webhook on port {self.port} got {len(self.requests)} request(s), expected {count}, "
                        f"within {timeout:.1f}s"
                    )
                self._cond.wait(left)
            return list(self.requests)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:
                    parsed = None
                outer._record(
                    RecordedRequest(
                        method=self.command,
                        path=self.path,
                        headers=dict(self.headers.items()),
                        body=body,
                        json=parsed,
                    )
                )
                if outer.delay:
                    time.sleep(outer.delay)
                status = outer._next_status()
                payload = outer.response_body
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout test); nothing to answer

            do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815 - http.server naming

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
                return

        return Handler

    def start(self) -> WebhookServer:
        """Serve in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"webhook-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (bounded)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> WebhookServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<WebhookServer {self.url} requests={len(self.requests)}>"
