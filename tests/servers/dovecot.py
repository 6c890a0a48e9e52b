"""A real Dovecot IMAP server for tests, started and stopped by the test itself.

Why Dovecot and not a Python fake: it is what real mailboxes run, so the
ingester is tested against real IMAP semantics (UIDVALIDITY, UIDPLUS, MOVE,
IDLE, STARTTLS and implicit TLS, SASL XOAUTH2), not against our assumptions.

The server is fully self-contained: a config, certificate, passwd file and
maildirs live in one temporary directory, nothing under /etc is touched, and
the process runs in the foreground (``dovecot -F``) in its own session so it
can always be killed as a group. It is built on these facts of Dovecot 2.3:
as root, login processes refuse root (so mail runs as the dovecot user),
SIGTERM takes ~1 s, and IMAPS sends no greeting before the TLS handshake.
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import itertools
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import weakref
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .ports import LOCALHOST, free_ports, port_open, wait_until
from .tls import CertPair, make_self_signed_cert

if TYPE_CHECKING:
    from imapclient import IMAPClient

INSTALL_HINT = "run `sudo scripts/install-test-deps.sh` (CI runs it) to install dovecot-imapd"

#: Post-login capabilities Dovecot 2.3 advertises by default, minus MOVE.
#: ``imap_capability`` can only *replace* (or ``+``-extend) the list, not
#: remove one item, so the no-MOVE server spells the whole list out. Checked
#: against Dovecot 2.3.19's real post-login CAPABILITY; the self-test asserts
#: IDLE and UIDPLUS are still present.
CAPABILITIES_WITHOUT_MOVE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
    "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE "
    "SAVEDATE LITERAL+ NOTIFY"
)

TlsMode = Literal["starttls", "imaps", "plain"]

_user_counter = itertools.count(1)
_live_servers: weakref.WeakSet[Dovecot] = weakref.WeakSet()


def find_dovecot() -> str | None:
    """Path of the dovecot binary, or None. /usr/sbin is not on a normal user's PATH."""
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)), None
    )


class DovecotNotInstalled(RuntimeError):
    """Raised when the dovecot binary is missing, with the command that installs it."""


class DovecotStartError(RuntimeError):
    """Raised when Dovecot did not come up; the message carries the log tail."""


class TokenIntrospectionServer:
    """A tiny OAuth2 token-introspection endpoint (RFC 7662 style) for Dovecot's oauth2 passdb.

    Dovecot POSTs ``token=<bearer>``; we answer ``{"active": true, "username": …}``
    for tokens we were given and ``{"active": false}`` otherwise, which is what
    real providers do and makes Dovecot reject the login.
    """

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, token: str | None) -> None:
                with outer._lock:
                    outer.requests.append({"method": self.command, "path": self.path, "token": token or ""})
                    user = outer.tokens.get(token or "")
                body = json.dumps({"active": True, "username": user} if user else {"active": False}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
                self._answer((form.get("token") or [None])[0])

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                auth = self.headers.get("Authorization", "")
                if auth.lower().startswith("bearer "):
                    self._answer(auth[7:].strip())
                else:
                    query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                    self._answer((query.get("token") or query.get("access_token") or [None])[0])

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
                return

        self._httpd = ThreadingHTTPServer((LOCALHOST, 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://{LOCALHOST}:{self.port}/introspect"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="oauth2-introspect", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class Dovecot:
    """One Dovecot instance on 127.0.0.1 with a plain/STARTTLS and an IMAPS listener.

    Attributes: ``host``, ``imap_port`` (plain, STARTTLS-capable),
    ``imaps_port`` (implicit TLS), ``ca_file`` (trust this to verify the
    server), ``workdir``, ``log_path``, ``users`` (name → password), ``passwd_dir``,
    ``oauth`` (the token endpoint, or None) and ``capabilities`` (the
    ``imap_capability`` override, or None for Dovecot's default).

    Use as a context manager, or call ``start()`` / ``stop()`` yourself.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        capabilities: str | None = None,
        oauth2: bool = True,
        name: str = "dovecot",
    ) -> None:
        """Prepare (not start) a server.

        ``workdir`` defaults to a fresh world-traversable temp dir: as root the
        mail processes run as the ``dovecot`` user, which cannot enter pytest's
        0700 ``tmp_path`` (if you pass one as root, every parent must be
        traversable by ``dovecot``). ``capabilities`` replaces the post-login CAPABILITY
        list (see ``CAPABILITIES_WITHOUT_MOVE``). ``oauth2`` adds an XOAUTH2 /
        OAUTHBEARER passdb backed by a local introspection endpoint.
        """
        binary = find_dovecot()
        if binary is None:
            raise DovecotNotInstalled(f"dovecot is not installed: {INSTALL_HINT}")
        self.binary = binary
        self.name = name
        self._own_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix=f"dmarclens-{name}-")) if workdir is None else Path(workdir)
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        self.host = LOCALHOST
        self.capabilities = capabilities
        self.users: dict[str, str] = {}
        self.log_path = self.workdir / "dovecot.log"
        self.passwd_dir = self.workdir / "passwd.d"
        self.config_path = self.workdir / "dovecot.conf"
        self.mail_dir = self.workdir / "mail"
        self._passwd_stamp = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._lock = threading.RLock()
        self.imap_port, self.imaps_port = free_ports(2)
        self.oauth: TokenIntrospectionServer | None = None
        try:
            self.certs: CertPair = make_self_signed_cert(self.workdir / "tls", "dovecot")
            self.ca_file: Path = self.certs.ca_file
            self.oauth = TokenIntrospectionServer() if oauth2 else None
            self._write_passwd()
        except BaseException:
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        _live_servers.add(self)

    # ------------------------------------------------------------------ config
    def _identity(self) -> tuple[str, str, str, str]:
        """(login user, internal user, internal group, mail user) for this process' privileges."""
        if os.geteuid() == 0:
            return "dovenull", "dovecot", "dovecot", "dovecot"
        me = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        return me, me, group, me

    def _write_config(self) -> None:
        login_user, internal_user, internal_group, mail_user = self._identity()
        pw = pwd.getpwnam(mail_user)
        uid, gid = pw.pw_uid, pw.pw_gid
        d = self.workdir
        for sub in ("run", "state", "mail"):
            (d / sub).mkdir(exist_ok=True)
        if os.geteuid() == 0:
            # The mail processes run as the dovecot user and create homes under mail/.
            os.chown(self.mail_dir, uid, gid)
        mechanisms = "plain login" + (" xoauth2 oauthbearer" if self.oauth else "")
        lines = [
            f"# Generated by tests/servers/dovecot.py for the {self.name} test server. Do not edit.",
            f"base_dir = {d}/run",
            f"state_dir = {d}/state",
            f"log_path = {self.log_path}",
            f"info_log_path = {self.log_path}",
            f"debug_log_path = {self.log_path}",
            "protocols = imap",
            f"listen = {LOCALHOST}",
            "ssl = yes",
            f"ssl_cert = <{self.certs.cert}",
            f"ssl_key = <{self.certs.key}",
            "disable_plaintext_auth = no",
            f"auth_mechanisms = {mechanisms}",
            "auth_verbose = yes",
            # Failed logins answer at once instead of after Dovecot's default 2 s.
            "auth_failure_delay = 0",
            f"default_login_user = {login_user}",
            f"default_internal_user = {internal_user}",
            f"default_internal_group = {internal_group}",
            "first_valid_uid = 1",
            "first_valid_gid = 1",
            "mail_location = maildir:~/Maildir",
            "mail_fsync = never",
            "login_greeting = dmarclens test Dovecot ready.",
            "namespace inbox {",
            "  inbox = yes",
            "  separator = /",
            "}",
            "passdb {",
            "  driver = passwd-file",
            "  mechanisms = plain login",
            f"  args = scheme=PLAIN username_format=%u {self.passwd_dir}/%u",
            "}",
        ]
        if self.oauth:
            oauth_conf = d / "oauth2.conf.ext"
            oauth_conf.write_text(
                "\n".join(
                    [
                        "introspection_mode = post",
                        f"introspection_url = {self.oauth.url}",
                        "force_introspection = yes",
                        "username_attribute = username",
                        "active_attribute = active",
                        "active_value = true",
                        "timeout_msecs = 5000",
                        "",
                    ]
                )
            )
            lines += [
                "passdb {",
                "  driver = oauth2",
                "  mechanisms = xoauth2 oauthbearer",
                f"  args = {oauth_conf}",
                "}",
            ]
        lines += [
            "userdb {",
            "  driver = static",
            f"  args = uid={uid} gid={gid} home={self.mail_dir}/%u",
            "}",
            "service imap-login {",
            "  chroot = ",
            "  inet_listener imap {",
            f"    address = {LOCALHOST}",
            f"    port = {self.imap_port}",
            "  }",
            "  inet_listener imaps {",
            f"    address = {LOCALHOST}",
            f"    port = {self.imaps_port}",
            "    ssl = yes",
            "  }",
            "}",
            "service anvil {",
            "  chroot = ",
            # No auth penalty: one failed-login test would otherwise slow every
            # later login from 127.0.0.1 (2, 4, 8 … 15 s) on the shared server.
            "  unix_listener anvil-auth-penalty {",
            "    mode = 0",
            "  }",
            "}",
            "protocol imap {",
            # Ingest tests open many connections per user; the default limit is 10.
            "  mail_max_userip_connections = 500",
        ]
        if self.capabilities is not None:
            lines.append(f"  imap_capability = {self.capabilities}")
        lines += ["}", ""]
        self.config_path.write_text("\n".join(lines))

    def _write_passwd(self, user: str | None = None) -> None:
        """Write the per-user passwd-files (all users, or only ``user``).

        Why one file per user (``passwd.d/%u``): Dovecot re-checks a
        passwd-file at most once per second, so a user added to a shared file
        right after another login would be unknown for up to a second. A new
        user means a new path, which Dovecot opens fresh on first lookup.
        """
        self.passwd_dir.mkdir(exist_ok=True)
        self.passwd_dir.chmod(0o755)
        names = list(self.users) if user is None else [user]
        for name in names:
            path = self.passwd_dir / name
            password = self.users.get(name)
            if password is None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            tmp = self.passwd_dir / f".{name}.tmp"
            tmp.write_text(f"{name}:{{PLAIN}}{password}\n")
            tmp.chmod(0o644)  # read by the auth process, which runs as the dovecot user
            os.replace(tmp, path)
            # Strictly increasing mtime: a same-size edit is still seen as a change.
            stamp = max(time.time(), self._passwd_stamp + 1.0)
            os.utime(path, (stamp, stamp))
            self._passwd_stamp = stamp

    @staticmethod
    def _wait_next_second() -> None:
        """Sleep into the next wall-clock second.

        Dovecot looks at an already-opened passwd-file at most once per
        second; after changing or removing an existing user, the next lookup
        must happen in a later second to see the change.
        """
        time.sleep(1.02 - (time.time() % 1.0))

    # ------------------------------------------------------------------ users
    def add_user(self, name: str, password: str) -> None:
        """Add (or change the password of) a user; works before start and while running."""
        if not re.fullmatch(r"[a-z0-9._@-]+", name):
            raise ValueError(f"user name {name!r}: use lowercase letters, digits and ._@- only")
        if ":" in password or "\n" in password:
            raise ValueError("password must not contain ':' or newlines (passwd-file format)")
        with self._lock:
            existed = name in self.users
            self.users[name] = password
            self._write_passwd(name)
        if existed and self.is_running:
            self._wait_next_second()

    def remove_user(self, name: str) -> None:
        """Remove a user from the passwd file (their mail stays on disk)."""
        with self._lock:
            existed = self.users.pop(name, None) is not None
            self._write_passwd(name)
        if existed and self.is_running:
            self._wait_next_second()

    def new_user(self, prefix: str = "user") -> tuple[str, str]:
        """Create a user with a unique name and random password; return (name, password)."""
        prefix = re.sub(r"[^a-z0-9]+", "_", prefix.lower()).strip("_")[:40] or "user"
        name = f"{prefix}_{next(_user_counter)}_{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(12)
        self.add_user(name, password)
        return name, password

    def add_token(self, user: str, token: str | None = None) -> str:
        """Make ``token`` (random if None) a valid XOAUTH2/OAUTHBEARER access token for ``user``."""
        if self.oauth is None:
            raise RuntimeError("this Dovecot was created with oauth2=False")
        token = token or secrets.token_urlsafe(24)
        self.oauth.tokens[token] = user
        return token

    def revoke_token(self, token: str) -> None:
        """Make ``token`` invalid from the next login on."""
        if self.oauth is not None:
            self.oauth.tokens.pop(token, None)

    # ------------------------------------------------------------------ lifecycle
    @property
    def is_running(self) -> bool:
        """True while the master process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """PID of the Dovecot master process, if started."""
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 15.0) -> Dovecot:
        """Start Dovecot and wait until both listeners accept and IMAP greets.

        If a port we picked was taken in the meantime by another process,
        pick new ports and try again (up to three times).
        """
        with self._lock:
            if self.is_running:
                return self
            for attempt in range(3):
                try:
                    self._start_once(timeout)
                    return self
                except DovecotStartError as e:
                    if "Address already in use" in str(e) and attempt < 2:
                        self.imap_port, self.imaps_port = free_ports(2)
                        continue
                    raise
        return self

    def _start_once(self, timeout: float) -> None:
        self._write_config()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "run" / "master.pid").unlink()  # stale after kill(); would block start
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        stdout = open(self.workdir / "dovecot.stdout", "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: kill() reaches every child
            )
        finally:
            stdout.close()

        def ready() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise DovecotStartError(
                    f"dovecot exited with code {self._proc.returncode} during start-up\n"
                    + self._diagnostics(log_offset)
                )
            return port_open(self.imap_port) and port_open(self.imaps_port)

        self._started_at = time.monotonic()
        try:
            wait_until(ready, timeout, "Dovecot listeners", on_timeout=lambda: self._diagnostics(log_offset))
            self._check_greeting(timeout=5.0)
        except BaseException:
            self._terminate(signal.SIGKILL, wait=5.0)
            raise

    def _check_greeting(self, timeout: float) -> None:
        """The plain port answers ``* OK`` once imap-login and auth work (IMAPS waits for TLS)."""
        with socket.create_connection((self.host, self.imap_port), timeout=timeout) as s:
            greeting = s.recv(4096)
            if not greeting.startswith(b"* OK"):
                raise DovecotStartError(f"unexpected IMAP greeting {greeting!r}\n{self._diagnostics(0)}")
            with contextlib.suppress(OSError):
                s.sendall(b"a LOGOUT\r\n")

    def _diagnostics(self, log_offset: int) -> str:
        parts = []
        for path, offset in ((self.log_path, log_offset), (self.workdir / "dovecot.stdout", 0)):
            if path.exists():
                text = path.read_bytes()[offset:].decode("utf-8", "replace")
                if text.strip():
                    parts.append(f"--- {path} (tail) ---\n" + "\n".join(text.splitlines()[-30:]))
        return "\n".join(parts)

    def log_text(self) -> str:
        """The whole Dovecot log so far (auth failures, fatal errors …)."""
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    @staticmethod
    def _live_group_members(pgid: int) -> list[int]:
        """PIDs in process group ``pgid`` that are not zombies (read from /proc)."""
        members = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            # Fields after the ")" closing the command name: state, ppid, pgrp, ...
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
                members.append(int(entry.name))
        return members

    def _wait_group_gone(self, pgid: int, timeout: float) -> None:
        """Wait (bounded, best effort) until no live process of the group is left.

        Zombies are ignored: they hold no sockets or files, and reaping them is
        up to PID 1 once their parent (the master) is gone.
        """
        deadline = time.monotonic() + timeout
        while self._live_group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _terminate(self, sig: signal.Signals, wait: float) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                if sig != signal.SIGKILL:
                    # Measured: a SIGTERM within ~20 ms of start-up makes the
                    # master linger ~6 s for a child still starting; after
                    # 0.15 s shutdown takes the usual ~1 s.
                    time.sleep(max(0.0, self._started_at + 0.15 - time.monotonic()))
                with contextlib.suppress(ProcessLookupError):
                    if sig == signal.SIGKILL:
                        os.killpg(proc.pid, signal.SIGKILL)
                    else:
                        proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=wait)
        finally:
            # Whatever happened above, no process of this server's group survives.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            self._wait_group_gone(proc.pid, timeout=3.0)
            self._proc = None

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful shutdown (SIGTERM, ~1 s in Dovecot), SIGKILL of the group if it takes longer."""
        with self._lock:
            self._terminate(signal.SIGTERM, wait=timeout)

    def kill(self) -> None:
        """SIGKILL the whole server at once: connections drop mid-command, like a crash."""
        with self._lock:
            self._terminate(signal.SIGKILL, wait=5.0)

    def restart(self, timeout: float = 15.0) -> Dovecot:
        """Stop then start on the same ports, keeping users and mail."""
        self.stop()
        return self.start(timeout=timeout)

    def close(self, graceful: bool = True) -> None:
        """Stop the server and the token endpoint, delete the work dir if we made it.

        ``graceful=False`` SIGKILLs the process group instead of waiting ~1 s
        for Dovecot's orderly shutdown; fixtures use it at teardown, where
        nothing is left to flush.
        """
        try:
            if graceful:
                self.stop()
            else:
                self.kill()
        finally:
            if self.oauth is not None:
                self.oauth.close()
                self.oauth = None
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            _live_servers.discard(self)

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return (
            f"<Dovecot {self.name} {state} imap={self.imap_port} imaps={self.imaps_port} dir={self.workdir}>"
        )

    # ------------------------------------------------------------------ clients
    def ssl_context(self) -> ssl.SSLContext:
        """Client TLS context that trusts only this server's certificate (hostname checked)."""
        return self.certs.client_context()

    def client(
        self,
        user: str | None = None,
        password: str | None = None,
        *,
        tls: TlsMode = "starttls",
        timeout: float = 10.0,
    ) -> IMAPClient:
        """An ``imapclient.IMAPClient`` connected (and logged in if ``user`` given).

        ``tls``: ``"starttls"`` (plain port + STARTTLS), ``"imaps"`` (implicit
        TLS) or ``"plain"`` (no TLS). The caller must ``logout()`` it; it is
        also a context manager.
        """
        from imapclient import IMAPClient

        if tls == "imaps":
            c = IMAPClient(
                self.host, self.imaps_port, ssl=True, ssl_context=self.ssl_context(), timeout=timeout
            )
        else:
            c = IMAPClient(self.host, self.imap_port, ssl=False, timeout=timeout)
            if tls == "starttls":
                c.starttls(self.ssl_context())
        if user is not None:
            c.login(user, password if password is not None else self.users[user])
        return c

    @contextlib.contextmanager
    def session(self, user: str, tls: TlsMode = "plain") -> Iterator[IMAPClient]:
        """Logged-in client for helper operations, logged out afterwards."""
        c = self.client(user, tls=tls)
        try:
            yield c
        finally:
            with contextlib.suppress(Exception):
                c.logout()

    def create_folder(self, user: str, folder: str) -> None:
        """Create ``folder`` (``/``-separated path) for ``user`` if it does not exist."""
        with self.session(user) as c:
            if not c.folder_exists(folder):
                c.create_folder(folder)

    def append(
        self,
        user: str,
        folder: str,
        message: bytes,
        flags: Sequence[str | bytes] = (),
        msg_time: object | None = None,
    ) -> int:
        """APPEND ``message`` to ``folder`` (created if missing); return its UID (from APPENDUID)."""
        with self.session(user) as c:
            if folder.upper() != "INBOX" and not c.folder_exists(folder):
                c.create_folder(folder)
            resp = c.append(folder, message, flags=tuple(flags), msg_time=msg_time)  # type: ignore[arg-type]
        m = re.search(rb"APPENDUID \d+ (\d+)", resp if isinstance(resp, bytes) else str(resp).encode())
        if not m:
            raise RuntimeError(f"APPEND response without APPENDUID: {resp!r}")
        return int(m.group(1))

    def list_folder(self, user: str, folder: str = "INBOX") -> list[tuple[int, bytes]]:
        """All messages in ``folder`` as (uid, raw bytes), by UID; read-only, flags untouched."""
        with self.session(user) as c:
            c.select_folder(folder, readonly=True)
            uids = c.search("ALL")
            if not uids:
                return []
            data = c.fetch(uids, ["BODY.PEEK[]"])
        return sorted((int(uid), bytes(d[b"BODY[]"])) for uid, d in data.items())

    def folders(self, user: str) -> list[str]:
        """Names of all folders of ``user``."""
        with self.session(user) as c:
            return [name for _flags, _sep, name in c.list_folders()]


@atexit.register
def _kill_leftovers() -> None:
    """Safety net: never leave a Dovecot running after the Python process exits."""
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.kill()
