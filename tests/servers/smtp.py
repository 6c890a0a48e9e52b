"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it receives.

Why: alert digests are sent with ``smtplib`` against real SMTP semantics
(envelope vs headers, STARTTLS, AUTH, a 5xx rejection); a mock would only echo
our own assumptions back. The server runs in aiosmtpd's own event-loop thread,
so tests stay synchronous.
"""

from __future__ import annotations

import errno
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from .ports import LOCALHOST, free_port
from .tls import CertPair, make_self_signed_cert


@dataclass
class ReceivedMessage:
    """One accepted message: envelope, parsed message and how the client talked to us."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    auth_user: str | None = None
    tls: bool = False
    received_at: float = field(default_factory=time.time)

    @property
    def subject(self) -> str:
        """The decoded Subject header ('' if absent)."""
        return str(self.message.get("Subject", ""))

    def text(self) -> str:
        """The text/plain body (or the first text part), decoded."""
        part = self.message.get_body(preferencelist=("plain", "html"))
        return part.get_content() if part is not None else ""


class SMTPServer:
    """aiosmtpd ``Controller`` on 127.0.0.1:``port`` collecting ``messages``.

    Options: ``starttls`` advertises STARTTLS with a self-signed cert (trust
    ``ca_file``); ``users`` (login → password) enables AUTH PLAIN/LOGIN and
    ``require_auth`` makes it mandatory. Set ``reply`` to an SMTP reply such as
    ``"550 5.7.1 relay denied"`` to reject DATA (tests of failed sends).
    """

    def __init__(
        self,
        *,
        starttls: bool = False,
        users: dict[str, str] | None = None,
        require_auth: bool = False,
        port: int | None = None,
    ) -> None:
        self.host = LOCALHOST
        self.port = port or free_port()
        self.messages: list[ReceivedMessage] = []
        self.reply: str | None = None
        self.users = dict(users or {})
        self.certs: CertPair | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._cond = threading.Condition()
        kwargs: dict[str, Any] = {}
        if starttls:
            self._tmp = tempfile.TemporaryDirectory(prefix="dmarclens-smtp-")
            self.certs = make_self_signed_cert(Path(self._tmp.name), "smtp")
            kwargs["tls_context"] = self.certs.server_context()
        if self.users or require_auth:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = require_auth
            kwargs["auth_require_tls"] = starttls  # without TLS configured, allow AUTH in clear
        self._kwargs = kwargs
        self._auto_port = port is None
        self._controller = self._make_controller()

    def _make_controller(self) -> Controller:
        return Controller(
            _Handler(self), hostname=self.host, port=self.port, ready_timeout=10, **self._kwargs
        )

    @property
    def ca_file(self) -> Path | None:
        """Certificate to trust for STARTTLS (None when TLS is off)."""
        return self.certs.ca_file if self.certs else None

    def _authenticate(
        self, server: object, session: object, envelope: object, mechanism: str, auth_data: object
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            if self.users.get(login) == auth_data.password.decode("utf-8", "replace"):
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    def _record(self, msg: ReceivedMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages arrived; return them all. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"SMTP server on port {self.port} got {len(self.messages)} message(s), expected {count}, "
                        f"within {timeout:.1f}s"
                    )
                self._cond.wait(left)
            return list(self.messages)

    def start(self) -> SMTPServer:
        """Start the controller thread; returns when the server accepts connections.

        If the free port we picked was taken meanwhile, retry on a new one.
        """
        for attempt in range(3):
            try:
                self._controller.start()
                return self
            except OSError as e:
                if e.errno != errno.EADDRINUSE or not self._auto_port or attempt == 2:
                    raise
                self.port = free_port()
                self._controller = self._make_controller()
        return self

    def stop(self) -> None:
        """Stop the server thread and remove the temporary certificate."""
        try:
            self._controller.stop()
        except AssertionError:
            pass  # never started / already stopped
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def __enter__(self) -> SMTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SMTPServer {self.host}:{self.port} messages={len(self.messages)}>"


class _Handler:
    """aiosmtpd handler: parse and store DATA, or answer with the configured rejection."""

    def __init__(self, server: SMTPServer) -> None:
        self.server = server

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook name
        if self.server.reply:
            return self.server.reply
        raw = envelope.original_content or envelope.content
        raw = raw if isinstance(raw, bytes) else str(raw).encode()
        message = cast(EmailMessage, BytesParser(policy=policy.default).parsebytes(raw))
        auth = session.auth_data if isinstance(session.auth_data, str) else None
        self.server._record(
            ReceivedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=message,
                raw=raw,
                auth_user=auth,
                tls=session.ssl is not None,
            )
        )
        return "250 OK: message accepted"
