"""One IMAP connection to one report folder: connect, TLS, login, folder work.

This module knows IMAP and nothing about DuckDB: ``dmarclens.ingest.mailbox`` decides
what to store and where each message goes; this module only does what it is
told and turns every failure into one ``ImapError`` line that names
user@host:port/folder, never the password or token.

Failures are split by what the caller should do about them:
``ImapConnectError`` (unknown host, refused port, timeout), ``ImapTlsError``
(certificate or handshake), ``ImapAuthError`` and ``ImapFolderError`` are
configuration problems: retrying will not help. ``ImapDisconnected`` (the
connection dropped after it worked) is worth a reconnect.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date

from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError, IMAPClientAbortError, IMAPClientError, LoginError

from dmarclens.core.errors import SourceError
from dmarclens.sources.imap.settings import Credentials, ImapSettings

log = logging.getLogger(__name__)



class ImapError(SourceError):
    """An IMAP operation failed; the message is one line fit for a user."""

    retryable = False


class ImapConnectError(ImapError):
    """The server could not be reached at all (name, port, network)."""

    retryable = True


class ImapTlsError(ImapError):
    """TLS failed: certificate not trusted, wrong name, or not a TLS port."""


class ImapAuthError(ImapError):
    """The server refused the login."""


class ImapFolderError(ImapError):
    """A folder is missing or cannot be created, selected or written."""


class ImapDisconnected(ImapError):
    """The connection dropped after it had worked; reconnecting may help."""

    retryable = True


@dataclass
class FolderState:
    """What SELECT said about the folder being drained."""

    name: str  # the server's name for it
    uidvalidity: int
    exists: int
    uidnext: int | None = None
    readonly: bool = False


@dataclass
class ImapConnection:
    """A logged-in IMAP session for one ImapSettings.

    ``get_credentials`` is called at every connect so password commands and
    OAuth2 token commands are re-run (tokens expire within the hour).
    """

    settings: ImapSettings
    get_credentials: Callable[[], Credentials]
    client: IMAPClient | None = None
    capabilities: frozenset[str] = frozenset()
    delimiter: str = "/"
    prefix: str = ""
    selected: FolderState | None = None
    _secrets: list[str] = field(default_factory=list, repr=False)
    _idling: bool = False
    _ready: bool = False  # logged in: later socket errors mean "dropped", not "cannot connect"

    # ------------------------------------------------------------------ naming / errors
    @property
    def where(self) -> str:
        s = self.settings
        return f"imap {s.user}@{s.host}:{s.effective_port}"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return " ".join(text.split())

    def _err(self, cls: type[ImapError], message: str, folder: str | None = None) -> ImapError:
        where = self.where + (f" folder {folder!r}" if folder else "")
        return cls(self._scrub(f"{where}: {message}"))

    @contextlib.contextmanager
    def _guard(self, doing: str, folder: str | None = None) -> Iterator[None]:
        """Translate socket/TLS/IMAP exceptions raised while ``doing`` into ImapErrors."""
        try:
            yield
        except ImapError:
            raise
        except LoginError as e:
            raise self._err(ImapAuthError, f"login failed: {_server_text(e)}") from None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as e:
            if not self._ready:
                raise self._err(ImapTlsError, _tls_message(e, self.settings, doing)) from None
            self._drop()
            raise self._err(ImapDisconnected, f"connection lost while {doing}: {e.reason or e}", folder) from None
        except ssl.SSLCertVerificationError as e:
            raise self._err(ImapTlsError, _cert_message(e, self.settings)) from None
        except ssl.SSLError as e:
            raise self._err(ImapTlsError, _tls_message(e, self.settings, doing)) from None
        except IMAPClientAbortError as e:
            self._drop()
            raise self._err(ImapDisconnected, f"connection lost while {doing}: {_server_text(e)}", folder) from None
        except CapabilityError as e:
            raise self._err(ImapError, f"server lacks a needed capability while {doing}: {e}", folder) from None
        except IMAPClientError as e:
            text = _server_text(e)
            if _looks_disconnected(text):
                self._drop()
                raise self._err(ImapDisconnected, f"connection lost while {doing}: {text}", folder) from None
            raise self._err(ImapError, f"server refused {doing}: {text}", folder) from None
        except socket.gaierror as e:
            raise self._err(ImapConnectError, f"cannot resolve host {self.settings.host!r}: {e.strerror}") from None
        except ConnectionRefusedError:
            raise self._err(
                ImapConnectError, f"connection refused (nothing listens on port {self.settings.effective_port}?)"
            ) from None
        except TimeoutError:
            if not self._ready:
                hint = ""
                if self.settings.tls != "implicit" and doing == "connecting":
                    # An IMAPS port waits silently for a TLS handshake that never comes.
                    hint = "; if this is an IMAPS port (usually 993), use --tls implicit"
                raise self._err(
                    ImapConnectError, f"no answer within {self.settings.timeout:.0f}s while {doing}{hint}"
                ) from None
            self._drop()
            raise self._err(
                ImapDisconnected, f"server stopped answering (timeout {self.settings.timeout:.0f}s) while {doing}", folder
            ) from None
        except OSError as e:
            if not self._ready:
                raise self._err(ImapConnectError, f"cannot connect: {e.strerror or e}") from None
            self._drop()
            raise self._err(ImapDisconnected, f"connection lost while {doing}: {e.strerror or e}", folder) from None

    # ------------------------------------------------------------------ connect
    def ssl_context(self) -> ssl.SSLContext:
        """Verifying by default; --ca-file trusts a private CA; --insecure checks nothing."""
        s = self.settings
        if s.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)

    def connect(self) -> ImapConnection:
        """Open the connection, secure it, log in and learn the folder layout."""
        s = self.settings
        self.close()
        creds = self.get_credentials()
        self._secrets = creds.secrets
        client: IMAPClient | None = None
        with self._guard("connecting"):
            if s.tls == "implicit":
                client = IMAPClient(s.host, s.effective_port, ssl=True, ssl_context=self.ssl_context(),
                                    timeout=s.timeout)
            else:
                client = IMAPClient(s.host, s.effective_port, ssl=False, timeout=s.timeout)
        assert client is not None
        self.client = client
        try:
            if s.tls == "starttls":
                with self._guard("starting TLS"):
                    if not client.has_capability("STARTTLS"):
                        raise self._err(ImapTlsError, "server does not offer STARTTLS on this port "
                                                      "(try --tls implicit with port 993)")
                    client.starttls(self.ssl_context())
            with self._guard("logging in"):
                if creds.oauth2_token:
                    client.oauth2_login(creds.user, creds.oauth2_token, mech="XOAUTH2")
                else:
                    assert creds.password is not None
                    client.login(creds.user, creds.password)
            with self._guard("reading capabilities"):
                client._cached_capabilities = None  # post-login list can differ (MOVE, IDLE ...)
                self.capabilities = frozenset(
                    c.decode() if isinstance(c, bytes) else str(c) for c in client.capabilities()
                )
                self.delimiter, self.prefix = self._layout()
        except BaseException:
            self._drop()
            raise
        self._ready = True
        log.debug("%s: logged in; capabilities %s", self.where, " ".join(sorted(self.capabilities)))
        return self

    def _layout(self) -> tuple[str, str]:
        """The hierarchy separator and personal-namespace prefix ("" or e.g. "INBOX.")."""
        assert self.client is not None
        delimiter = "/"
        prefix = ""
        if "NAMESPACE" in self.capabilities:
            ns = self.client.namespace()
            if ns.personal:
                prefix, sep = ns.personal[0]
                prefix = prefix.decode() if isinstance(prefix, bytes) else str(prefix or "")
                if sep:
                    delimiter = sep.decode() if isinstance(sep, bytes) else str(sep)
                return delimiter, prefix
        rows = self.client.list_folders("", "")
        if rows and rows[0][1]:
            sep = rows[0][1]
            delimiter = sep.decode() if isinstance(sep, bytes) else str(sep)
        return delimiter, prefix

    def close(self) -> None:
        """Log out politely if possible; never raises."""
        client, self.client = self.client, None
        self.selected = None
        self._idling = False
        self._ready = False
        if client is None:
            return
        try:
            client.logout()
        except Exception:  # noqa: BLE001 - the connection may already be gone; closing must not fail
            with contextlib.suppress(Exception):
                client.shutdown()

    def _drop(self) -> None:
        """Forget a broken connection without talking to the server."""
        client, self.client = self.client, None
        self.selected = None
        self._idling = False
        self._ready = False
        if client is not None:
            with contextlib.suppress(Exception):
                client.shutdown()

    @property
    def connected(self) -> bool:
        return self.client is not None

    def _c(self) -> IMAPClient:
        if self.client is None:
            raise self._err(ImapDisconnected, "not connected")
        return self.client

    # ------------------------------------------------------------------ folders
    def server_name(self, folder: str) -> str:
        """Map a configured folder path ('/'-separated) to the server's name for it."""
        if folder.upper() == "INBOX":
            return "INBOX"
        name = folder.replace("/", self.delimiter) if self.delimiter != "/" else folder
        if self.prefix and not name.startswith(self.prefix) and name.upper() != self.prefix.rstrip(self.delimiter).upper():
            name = self.prefix + name
        return name

    def folder_exists(self, folder: str) -> bool:
        name = self.server_name(folder)
        with self._guard("checking the folder", name):
            return bool(self._c().folder_exists(name))

    def ensure_folder(self, folder: str) -> str:
        """Create the folder (and its parents, on servers that need that) if absent; return its server name."""
        name = self.server_name(folder)
        client = self._c()
        with self._guard("creating the folder", name):
            if client.folder_exists(name):
                return name
            parts = name.split(self.delimiter)
            for i in range(1, len(parts) + 1):
                partial = self.delimiter.join(parts[:i])
                if partial and (partial + self.delimiter) != self.prefix and not client.folder_exists(partial):
                    try:
                        client.create_folder(partial)
                    except IMAPClientError as e:
                        if not client.folder_exists(partial):
                            raise self._err(ImapFolderError, f"cannot create the folder: {_server_text(e)}", partial) from None
            log.info("%s: created folder %r", self.where, name)
        return name

    def select(self, folder: str, *, readonly: bool = False) -> FolderState:
        """SELECT (or EXAMINE) the folder; a missing folder is an ImapFolderError listing what exists."""
        name = self.server_name(folder)
        client = self._c()
        with self._guard("opening the folder", name):
            if not client.folder_exists(name):
                names = [n for _f, _d, n in client.list_folders()]
                shown = ", ".join(sorted(str(n) for n in names)[:12]) + (" …" if len(names) > 12 else "")
                raise self._err(ImapFolderError, f"folder does not exist (folders: {shown})", name)
            info = client.select_folder(name, readonly=readonly)
        self.selected = FolderState(
            name=name,
            uidvalidity=int(info.get(b"UIDVALIDITY", 0)),
            exists=int(info.get(b"EXISTS", 0)),
            uidnext=int(info[b"UIDNEXT"]) if info.get(b"UIDNEXT") is not None else None,
            readonly=readonly,
        )
        return self.selected

    # ------------------------------------------------------------------ messages
    def search(self, *, since: date | None = None, min_uid: int = 1) -> list[int]:
        """UIDs of undeleted messages, oldest first, optionally only received since a day / above a UID.

        ``min_uid`` lets watch mode ask only for what arrived after the last
        message it saw instead of re-listing the folder at every wake-up.
        """
        criteria: list[object] = ["NOT", "DELETED"]
        if since is not None:
            criteria += ["SINCE", since]
        if min_uid > 1:
            criteria += ["UID", f"{min_uid}:*"]
        with self._guard("searching the folder", self._folder_name()):
            uids = self._c().search(criteria)
        # "UID n:*" always matches the highest UID, even when it is below n.
        return sorted(int(u) for u in uids if int(u) >= min_uid)

    def sizes(self, uids: list[int]) -> dict[int, int]:
        """RFC822.SIZE per UID (messages expunged meanwhile are simply absent)."""
        if not uids:
            return {}
        with self._guard("reading message sizes", self._folder_name()):
            data = self._c().fetch(uids, ["RFC822.SIZE"])
        return {int(uid): int(d.get(b"RFC822.SIZE", 0)) for uid, d in data.items()}

    def fetch(self, uids: list[int]) -> dict[int, bytes]:
        """Full raw messages, without setting \\Seen (BODY.PEEK[]): unread still means unprocessed."""
        if not uids:
            return {}
        with self._guard("fetching messages", self._folder_name()):
            data = self._c().fetch(uids, ["BODY.PEEK[]"])
        out: dict[int, bytes] = {}
        for uid, d in data.items():
            body = d.get(b"BODY[]")
            if body is not None:
                out[int(uid)] = bytes(body)
        return out

    def message_ids(self, uids: list[int]) -> dict[int, str | None]:
        """Message-ID header per UID (for the ledger of messages never downloaded)."""
        if not uids:
            return {}
        with self._guard("reading headers", self._folder_name()):
            data = self._c().fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        out: dict[int, str | None] = {}
        for uid, d in data.items():
            raw = next((v for k, v in d.items() if k.startswith(b"BODY[HEADER")), b"") or b""
            m = re.search(rb"(?im)^message-id:\s*(.+?)\s*$", bytes(raw))
            out[int(uid)] = m.group(1).decode("utf-8", "replace") if m else None
        return out

    def move(self, uids: list[int], folder_name: str, *, mark_seen: bool = False) -> None:
        """Move messages to another folder: MOVE if offered, else COPY + \\Deleted + (UID) EXPUNGE."""
        if not uids:
            return
        client = self._c()
        with self._guard(f"moving messages to {folder_name!r}", self._folder_name()):
            if mark_seen:
                client.add_flags(uids, [b"\\Seen"], silent=True)
            if "MOVE" in self.capabilities:
                client.move(uids, folder_name)
                return
            client.copy(uids, folder_name)
            client.add_flags(uids, [b"\\Deleted"], silent=True)
            if "UIDPLUS" in self.capabilities:
                client.uid_expunge(uids)
            else:
                # Plain EXPUNGE also removes other messages someone flagged \Deleted
                # in this folder; that is what they asked for by flagging them.
                client.expunge()

    def noop(self) -> None:
        with self._guard("checking the connection", self._folder_name()):
            self._c().noop()

    def _folder_name(self) -> str | None:
        return self.selected.name if self.selected else None

    # ------------------------------------------------------------------ waiting for mail
    @property
    def can_idle(self) -> bool:
        return "IDLE" in self.capabilities

    def wait_for_mail(self, max_wait: float, should_stop: Callable[[], bool], tick: float = 1.0) -> bool:
        """IDLE until the server announces new mail, ``max_wait`` passes, or ``should_stop()``.

        Returns True when new mail (EXISTS/RECENT) was announced. Wakes every
        ``tick`` seconds to look at ``should_stop`` so a SIGTERM is honoured
        promptly. A closed connection raises ImapDisconnected.
        """
        client = self._c()
        folder = self._folder_name()
        deadline = time.monotonic() + max_wait
        news = False
        with self._guard("starting IDLE", folder):
            client.idle()
            self._idling = True
        # An EXISTS the server sent before IDLE's "+ idling" (or during our last commands) was
        # swallowed into imaplib's untagged store; without this look it would wait for the next
        # renewal. A stale one only costs one UID SEARCH. The store is then emptied: nothing else
        # reads it, and in a months-long watch the EXPUNGE lines of our own MOVEs would pile up.
        untagged = getattr(getattr(client, "_imap", None), "untagged_responses", None)
        if isinstance(untagged, dict):
            news = bool(untagged.get("EXISTS"))
            untagged.clear()
        try:
            while not should_stop() and not news:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with self._guard("waiting in IDLE", folder):
                    responses = client.idle_check(timeout=min(tick, remaining))
                if not responses and self._socket_at_eof():
                    self._drop()
                    raise self._err(ImapDisconnected, "connection closed by the server during IDLE", folder)
                for resp in responses:
                    if len(resp) >= 2 and resp[1] in (b"EXISTS", b"RECENT") and isinstance(resp[0], int):
                        news = news or resp[1] == b"EXISTS" or resp[0] > 0
                    elif resp and resp[0] == b"BYE":
                        self._drop()
                        raise self._err(ImapDisconnected, f"server said goodbye: {_to_text(resp[1:])}", folder)
                if news:
                    break
        finally:
            if self.client is not None and self._idling:
                self._idling = False
                with self._guard("ending IDLE", folder):
                    _text, extra = client.idle_done()
                for resp in extra or []:
                    if len(resp) >= 2 and resp[1] == b"EXISTS":
                        news = True
        return news

    def _socket_at_eof(self) -> bool:
        """After an empty idle_check: a socket that is readable right away has hit EOF."""
        if self.client is None:
            return True
        try:
            sock = self.client.socket()
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return False
            peek_flags = socket.MSG_PEEK | socket.MSG_DONTWAIT
            raw = socket.socket(fileno=sock.fileno())
            try:
                return raw.recv(1, peek_flags) == b""
            finally:
                raw.detach()
        except BlockingIOError:
            return False
        except OSError:
            return True


# ---------------------------------------------------------------------- helpers


def _to_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return " ".join(_to_text(v) for v in value)
    return str(value)


def _server_text(e: BaseException) -> str:
    text = _to_text(e.args[0]) if e.args else str(e)
    text = re.sub(r"^b['\"](.*)['\"]$", r"\1", text.strip())
    return text or type(e).__name__


def _looks_disconnected(text: str) -> bool:
    lowered = text.lower()
    return any(w in lowered for w in ("socket error", "eof", "connection reset", "broken pipe", "bye"))


def _cert_message(e: ssl.SSLCertVerificationError, settings: ImapSettings) -> str:
    reason = e.verify_message or e.reason or str(e)
    if settings.ca_file:
        hint = f"it is not signed by a CA in {settings.ca_file}"
    else:
        hint = ("use --ca-file FILE to trust the server's CA (or self-signed certificate), "
                "or --insecure to skip checks (not recommended)")
    return f"the server certificate cannot be verified ({reason}); {hint}"


def _tls_message(e: ssl.SSLError, settings: ImapSettings, doing: str) -> str:
    reason = e.reason or str(e)
    text = f"TLS failed while {doing} ({reason})"
    if settings.tls == "implicit" and "WRONG_VERSION_NUMBER" in str(reason).upper():
        text += f"; port {settings.effective_port} does not speak implicit TLS (try --tls starttls, usually port 143)"
    return text


__all__ = [
    "FolderState",
    "ImapAuthError",
    "ImapConnectError",
    "ImapConnection",
    "ImapDisconnected",
    "ImapError",
    "ImapFolderError",
    "ImapTlsError",
]
