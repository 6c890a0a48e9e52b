"""Building report mail and running `dmarclens fetch` against the test Dovecot.

Report mail comes from dmarclens.generator (every wrapper a receiver uses);
the few things the generator does not make on purpose (junk, a corrupt
attachment, a failure report) are built here with the stdlib ``email``
package, byte for byte what such mail looks like.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from dmarclens.generator import (
    Attachment,
    DkimAuth,
    MailMeta,
    PolicySpec,
    RecordSpec,
    ReportSpec,
    SpfAuth,
    attachment_for,
    forward_email,
    inline_report_email,
    render_report,
    report_email,
    whole_body_gzip_email,
)
from dmarclens.generator.wrappers import gzip_bytes
from tests.servers.plugin import ImapAccount

DAY0 = int(datetime(2026, 10, 5, tzinfo=UTC).timestamp())
WHEN = datetime(2026, 10, 6, 8, 0, tzinfo=UTC)
ARCHIVE = "DMARC/Archive"
INVALID = "DMARC/Invalid"
REPO = Path(__file__).resolve().parents[2]


def spec(report_id: str, *, day: int = 0, org: str = "google.com", domain: str = "example.com") -> ReportSpec:
    """A small, realistic daily report: one authorized sender, one spoofer."""
    begin = DAY0 + day * 86400
    return ReportSpec(
        org_name=org, email=f"noreply-dmarc@{org}", report_id=report_id, begin=begin, end=begin + 86399,
        policy=PolicySpec(domain=domain, p="quarantine"), receiver=org,
        records=[
            RecordSpec(source_ip="40.107.22.10", count=120, header_from=domain, envelope_from=domain,
                       dkim=(DkimAuth(domain, "selector1", "pass"),), spf=(SpfAuth(domain, "pass"),)),
            RecordSpec(source_ip="203.0.113.66", count=7, header_from=domain, dkim_eval="fail",
                       spf_eval="fail", envelope_from="bad.example", spf=(SpfAuth("bad.example", "fail"),)),
        ],
    )


def meta(n: int | str, sender: str = "noreply-dmarc-support@google.com", subject: str | None = None) -> MailMeta:
    return MailMeta(sender, "dmarc@example.com", subject or f"Report Domain: example.com Report-ID: {n}",
                    WHEN, f"<msg-{n}@test.example>")


def simple_report_mail(n: int, *, style: str = "zip", day: int | None = None) -> bytes:
    """One report mail; report id ``r<n>`` (distinct report per n)."""
    s = spec(f"r{n}", day=n if day is None else day)
    return report_email([attachment_for(s, render_report(s), style)], meta(n))  # type: ignore[arg-type]


JUNK_MAIL = (
    b"From: Spammer <offers@spam.example>\r\nTo: dmarc@example.com\r\nSubject: You won a prize\r\n"
    b"Message-ID: <junk-1@spam.example>\r\nDate: Tue, 06 Oct 2026 08:00:00 +0000\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n\r\nClick here to claim it.\r\n"
)

RUF_MAIL = (
    b"From: dmarc@receiver.example\r\nTo: dmarc@example.com\r\nSubject: DMARC failure report\r\n"
    b"Message-ID: <ruf-1@receiver.example>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=feedback-report; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain\r\n\r\nA message failed DMARC.\r\n"
    b"--b1\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: auth-failure\r\n"
    b"User-Agent: test\r\nVersion: 1\r\nAuth-Failure: dmarc\r\n\r\n--b1--\r\n"
)


@dataclass
class MixedMailbox:
    """What was appended and what a correct run must end with."""

    uids: dict[str, int]  # case name -> UID in INBOX
    report_ids: set[str]  # every report that must end up stored
    archive: set[str]  # case names that belong in the archive folder
    invalid: set[str]  # case names that belong in the invalid folder


def fill_mixed_mailbox(account: ImapAccount, folder: str = "INBOX") -> MixedMailbox:
    """Every shape of mail a rua address receives, one message each."""
    s = {k: spec(k, day=i) for i, k in enumerate(["xml", "gz", "zip", "inline", "fwd", "multi1", "multi2",
                                                   "mimecast", "partial", "resent"])}
    x = {k: render_report(v) for k, v in s.items()}
    mails: dict[str, bytes] = {
        "xml": report_email([attachment_for(s["xml"], x["xml"], "xml")], meta("xml")),
        "gz": report_email([attachment_for(s["gz"], x["gz"], "gzip")], meta("gz"), text="Report attached."),
        "zip": report_email([attachment_for(s["zip"], x["zip"], "x-zip")], meta("zip")),
        "inline": inline_report_email(x["inline"], meta("inline")),
        "fwd": forward_email(report_email([attachment_for(s["fwd"], x["fwd"], "octet-gz")], meta("fwd-inner")),
                             meta("fwd", "colleague@example.com", "Fwd: DMARC report")),
        "multi": report_email([attachment_for(s["multi1"], x["multi1"], "gzip"),
                               attachment_for(s["multi2"], x["multi2"], "zip")], meta("multi")),
        "mimecast": whole_body_gzip_email(gzip_bytes(x["mimecast"]), "report.xml.gz", meta("mimecast")),
        "junk": JUNK_MAIL,
        "corrupt": report_email([Attachment("google.com!example.com!1!2.zip", b"PK\x03\x04" + b"\x00" * 60,
                                            "application/zip")], meta("corrupt")),
        # One good report and one broken gzip: the good one is stored, the mail needs a look.
        "partial": report_email([attachment_for(s["partial"], x["partial"], "zip"),
                                 Attachment("broken.xml.gz", b"\x1f\x8b\x08\x00broken", "application/gzip")],
                                meta("partial")),
        "ruf": RUF_MAIL,
        # A receiver re-sending a report already in this mailbox: a duplicate, archived.
        "dup": report_email([attachment_for(s["xml"], x["xml"], "gzip")], meta("dup")),
        "resent": report_email([attachment_for(s["resent"], x["resent"], "gzip")], meta("resent")),
    }
    uids = {name: account.server.append(account.user, folder, data) for name, data in mails.items()}
    reports = {k for k in s}
    return MixedMailbox(uids=uids, report_ids=reports, invalid={"junk", "corrupt", "partial"},
                        archive=set(mails) - {"junk", "corrupt", "partial"})


def fill_simple(account: ImapAccount, n: int, *, start: int = 0, folder: str = "INBOX") -> list[int]:
    """``n`` one-report messages with report ids r<start>..r<start+n-1>."""
    return [account.server.append(account.user, folder, simple_report_mail(i)) for i in range(start, start + n)]


def subjects(account: ImapAccount, folder: str) -> list[str]:
    """Message-ID of every message in a folder (stable names for assertions)."""
    import email

    out = []
    for _uid, raw in account.server.list_folder(account.user, folder):
        out.append(str(email.message_from_bytes(raw).get("Message-ID", "")))
    return sorted(out)


def count(account: ImapAccount, folder: str) -> int:
    if folder != "INBOX" and folder not in account.server.folders(account.user):
        return 0
    return len(account.server.list_folder(account.user, folder))


def query(db: Path, sql: str, params: Sequence[object] = ()) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def stored_report_ids(db: Path) -> list[str]:
    return sorted(r[0] for r in query(db, "SELECT report_id FROM reports"))


# ---------------------------------------------------------------------- running the CLI


def fetch_args(account: ImapAccount, db: Path, *extra: str, tls: str = "starttls") -> list[str]:
    """CLI arguments for the account; ``tls="bare"`` adds no TLS/port options (the test gives its own)."""
    args = ["fetch", "--host", account.host, "--user", account.user, "--db", str(db)]
    if tls == "starttls":
        args += ["--tls", "starttls", "--port", str(account.port), "--ca-file", str(account.ca_file)]
    elif tls == "implicit":
        args += ["--tls", "implicit", "--port", str(account.imaps_port), "--ca-file", str(account.ca_file)]
    elif tls == "none":
        args += ["--tls", "none", "--port", str(account.port)]
    return args + list(extra)


def cli_env(account: ImapAccount | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMARCLENS_")}
    if account is not None:
        env["DMARCLENS_IMAP_PASSWORD"] = account.password
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def run_fetch(account: ImapAccount, db: Path, *extra: str, tls: str = "starttls",
              env: dict[str, str] | None = None, timeout: float = 60,
              global_args: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """`python -m dmarclens [global_args] fetch ...` as a user runs it, password in the environment."""
    return subprocess.run(
        [sys.executable, "-m", "dmarclens", *global_args, *fetch_args(account, db, *extra, tls=tls)],
        env=cli_env(account, env), capture_output=True, text=True, timeout=timeout, cwd=db.parent,
    )


def start_fetch(account: ImapAccount, db: Path, *extra: str, tls: str = "starttls",
                env: dict[str, str] | None = None, stderr_path: Path | None = None) -> subprocess.Popen[str]:
    """Start `dmarclens fetch` in the background (watch mode, failpoints); stderr goes to a file."""
    err_path = stderr_path or db.parent / f"fetch-{time.monotonic_ns()}.stderr"
    err = open(err_path, "w")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dmarclens", *fetch_args(account, db, *extra, tls=tls)],
            env=cli_env(account, env), stdout=subprocess.PIPE, stderr=err, text=True, cwd=db.parent,
        )
    finally:
        err.close()
    proc.stderr_path = err_path  # type: ignore[attr-defined]
    return proc


def stderr_of(proc: subprocess.Popen[str]) -> str:
    return Path(proc.stderr_path).read_text()  # type: ignore[attr-defined]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Bounded wait for a condition (never a speed assertion: the bound is generous)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def is_stopped(pid: int) -> bool:
    """True when the process sits in SIGSTOP (state T), i.e. it reached a `stop` failpoint."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] in (b"T", b"t")


def wait_stopped(proc: subprocess.Popen[str], timeout: float = 30) -> None:
    def stopped() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"fetch exited ({proc.returncode}) before its failpoint:\n{stderr_of(proc)}")
        return is_stopped(proc.pid)

    wait_for(stopped, timeout, "the fetch process to reach its failpoint")


def resume(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGCONT)
