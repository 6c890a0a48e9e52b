"""Self-tests of the real-server fixtures in tests/servers.

Why: every other test trusts these servers to behave like the real thing. Each
test here proves one fixture against an independent client (imapclient,
dnspython, smtplib, urllib, Playwright) and its failure modes (bad token,
NXDOMAIN, SERVFAIL, timeout, rejected mail, error status, exception box).
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING

import dns.exception
import dns.resolver
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.servers.dns import DNSServer, reverse_name
from tests.servers.dovecot import Dovecot
from tests.servers.plugin import ImapAccount
from tests.servers.smtp import SMTPServer
from tests.servers.streamlit_app import StreamlitServer, exceptions, wait_for_app_idle, wait_for_plotly
from tests.servers.webhook import WebhookServer

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPORT_MAIL = (
    b"From: noreply-dmarc-support@google.com\r\n"
    b"To: dmarc@example.com\r\n"
    b"Subject: Report domain: example.com Submitter: google.com Report-ID: 1234\r\n"
    b"Message-ID: <fixture-selftest@example.com>\r\n"
    b"\r\n"
    b"aggregate report body\r\n"
)


# ---------------------------------------------------------------- IMAP
def test_imap_starttls_and_imaps_verify_against_fixture_ca(imap_account: ImapAccount) -> None:
    server, user, password = imap_account
    verified = ssl.create_default_context(cafile=str(server.ca_file))

    plain = IMAPClient(server.host, server.imap_port, ssl=False, timeout=10)
    assert b"STARTTLS" in plain.capabilities()
    plain.starttls(verified)
    assert plain.login(user, password)
    plain.logout()

    implicit = IMAPClient(server.host, server.imaps_port, ssl=True, ssl_context=verified, timeout=10)
    assert implicit.login(user, password)
    assert implicit.has_capability("IDLE") and implicit.has_capability("MOVE")
    implicit.logout()

    # The certificate is really checked: a context without the fixture CA refuses it.
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(
            server.host, server.imaps_port, ssl=True, ssl_context=ssl.create_default_context(), timeout=10
        )

    with pytest.raises(LoginError):
        server.client(user, "wrong-password")


def test_imap_append_then_fetch_and_users_are_isolated(imap_account: ImapAccount) -> None:
    server, user, _ = imap_account
    uid = server.append(user, "INBOX", REPORT_MAIL)
    sub_uid = server.append(user, "Reports/2026", REPORT_MAIL.replace(b"1234", b"5678"))

    assert server.list_folder(user, "INBOX") == [(uid, REPORT_MAIL)]
    assert [raw for _, raw in server.list_folder(user, "Reports/2026")] == [
        REPORT_MAIL.replace(b"1234", b"5678")
    ]
    assert sub_uid >= 1
    server.create_folder(user, "Processed")
    assert {"INBOX", "Reports/2026", "Processed"} <= set(server.folders(user))

    with server.client(user, tls="imaps") as c:  # an independent client sees the same message
        c.select_folder("INBOX", readonly=True)
        assert c.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"] == REPORT_MAIL

    other, _ = server.new_user("other")
    assert server.list_folder(other, "INBOX") == []


def test_no_move_server_hides_move_but_keeps_the_rest(
    imap_account_no_move: ImapAccount, imap_account: ImapAccount
) -> None:
    with imap_account_no_move.server.client(imap_account_no_move.user) as c:
        caps = set(c.capabilities())
    assert b"MOVE" not in caps
    assert {b"IDLE", b"UIDPLUS", b"CONDSTORE", b"IMAP4REV1"} <= caps

    with imap_account.server.client(imap_account.user) as c:
        assert c.has_capability("MOVE")


def test_xoauth2_login_with_known_token_only(imap_account: ImapAccount) -> None:
    server, user, _ = imap_account
    token = server.add_token(user)

    c = server.client(tls="imaps")
    c.oauth2_login(user, token)
    c.select_folder("INBOX")
    c.logout()

    c = server.client(tls="imaps")
    with pytest.raises(LoginError):
        c.oauth2_login(user, "not-a-token-the-endpoint-knows")
    c.shutdown()

    server.revoke_token(token)
    c = server.client(tls="imaps")
    with pytest.raises(LoginError):
        c.oauth2_login(user, token)
    c.shutdown()


def test_private_dovecot_survives_kill_and_restart(dovecot_factory: Callable[..., Dovecot]) -> None:
    server = dovecot_factory()
    user, password = server.new_user("crash")
    uid = server.append(user, "INBOX", REPORT_MAIL)

    c = server.client(user, password)
    c.select_folder("INBOX")
    server.kill()  # "server dies mid-batch"
    assert not server.is_running
    with pytest.raises((OSError, IMAPClient.AbortError)):
        c.fetch([uid], ["BODY.PEEK[]"])

    server.start()
    assert server.list_folder(user) == [(uid, REPORT_MAIL)]
    port = server.imap_port
    server.restart()
    assert server.imap_port == port and server.list_folder(user) == [(uid, REPORT_MAIL)]


# ---------------------------------------------------------------- DNS
def test_dns_answers_from_the_zone(dns_server: DNSServer) -> None:
    zone = dns_server.zone
    zone.add_host("mail-ed1-f41.google.com", "209.85.208.41")
    zone.add_ptr("2a00:1450:4864:20::541", "mail-ed1-x541.google.com")
    zone.add_txt("example.com", "v=spf1 include:_spf.google.com " + "ip4:192.0.2.0/24 " * 40 + "-all")
    zone.add_cname("www.example.com", "mail-ed1-f41.google.com")
    r = dns_server.resolver(timeout=2.0)

    assert [str(a) for a in r.resolve_address("209.85.208.41")] == ["mail-ed1-f41.google.com."]
    assert [str(a) for a in r.resolve_address("2a00:1450:4864:20::541")] == ["mail-ed1-x541.google.com."]
    assert [a.address for a in r.resolve("mail-ed1-f41.google.com", "A")] == ["209.85.208.41"]
    assert [a.address for a in r.resolve("WWW.Example.com", "A")] == ["209.85.208.41"]  # CNAME followed
    txt = b"".join(r.resolve("example.com", "TXT")[0].strings)
    assert txt.startswith(b"v=spf1 include:_spf.google.com") and txt.endswith(b"-all")
    assert reverse_name("192.0.2.1") == "1.2.0.192.in-addr.arpa"

    with pytest.raises(dns.resolver.NXDOMAIN):
        r.resolve("unknown.example.com", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        r.resolve("example.com", "AAAA")


def test_dns_failure_modes_per_name_and_whole_server(dns_server: DNSServer) -> None:
    zone = dns_server.zone
    zone.add_ptr("192.0.2.10", "ok.example.net")
    zone.set_behaviour("192.0.2.11", "servfail")  # an IP means its PTR name
    zone.set_behaviour("slow.example.net", "timeout")
    zone.add_a("late.example.net", "192.0.2.12")
    zone.set_delay("late.example.net", 0.3)
    r = dns_server.resolver(timeout=0.5)

    assert str(r.resolve_address("192.0.2.10")[0]) == "ok.example.net."
    with pytest.raises(dns.resolver.NoNameservers, match="SERVFAIL"):
        r.resolve_address("192.0.2.11")
    with pytest.raises(dns.exception.Timeout):
        r.resolve("slow.example.net", "A")
    assert r.resolve("late.example.net", "A")[0].address == "192.0.2.12"

    zone.add_txt("big.example.net", "k=rsa; p=" + "A" * 3000)  # > EDNS size: truncated, retried over TCP
    assert len(b"".join(r.resolve("big.example.net", "TXT")[0].strings)) > 3000
    assert ("big.example.net", "TXT", "tcp") in dns_server.queries

    dns_server.mode = "servfail"
    with pytest.raises(dns.resolver.NoNameservers):
        r.resolve_address("192.0.2.10")
    dns_server.mode = "timeout"
    with pytest.raises(dns.exception.Timeout):
        r.resolve_address("192.0.2.10")


# ---------------------------------------------------------------- SMTP
def _digest() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "dmarclens@example.com"
    msg["To"] = "secops@example.com"
    msg["Subject"] = "dmarclens: 2 new anomalies für example.com"
    msg.set_content("New sender 203.0.113.7 passed DMARC for example.com.")
    return msg


def test_smtp_receives_and_can_reject(smtp_server: SMTPServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as s:
        s.send_message(_digest(), to_addrs=["secops@example.com", "noc@example.com"])
    got = smtp_server.wait_for(1)[0]
    assert got.mail_from == "dmarclens@example.com"
    assert got.rcpt_tos == ["secops@example.com", "noc@example.com"]
    assert got.subject == "dmarclens: 2 new anomalies für example.com"
    assert "203.0.113.7" in got.text()

    smtp_server.reply = "550 5.7.1 relaying denied"
    with (
        smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as s,
        pytest.raises(smtplib.SMTPDataError),
    ):
        s.send_message(_digest())
    assert len(smtp_server.messages) == 1


def test_smtp_starttls_and_auth(smtp_server_factory: Callable[..., SMTPServer]) -> None:
    server = smtp_server_factory(starttls=True, users={"alerts": "s3cret"}, require_auth=True)
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        s.starttls(context=ssl.create_default_context(cafile=str(server.ca_file)))
        s.login("alerts", "s3cret")
        s.send_message(_digest())
    got = server.wait_for(1)[0]
    assert got.tls and got.auth_user == "alerts"

    with smtplib.SMTP(server.host, server.port, timeout=10) as s, pytest.raises(smtplib.SMTPSenderRefused):
        s.send_message(_digest())  # no AUTH: refused


# ---------------------------------------------------------------- webhook
def test_webhook_records_posts_and_answers_chosen_status(webhook_server: WebhookServer) -> None:
    payload = {"text": "dmarclens: new sender for example.com", "severity": "high"}
    webhook_server.queue_statuses([503])

    def post() -> int:
        req = urllib.request.Request(
            webhook_server.url + "/hooks/slack?x=1",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "X-Test": "yes"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    assert post() == 503
    assert post() == 200
    first, second = webhook_server.wait_for(2)
    assert first.method == "POST" and first.path == "/hooks/slack?x=1"
    assert first.json == payload and second.json == payload
    assert first.header("content-type") == "application/json" and first.header("X-TEST") == "yes"


# ---------------------------------------------------------------- browser, Streamlit
def test_chromium_renders_a_local_page(page: Page, tmp_path: Path) -> None:
    html = tmp_path / "index.html"
    html.write_text(
        "<!doctype html><title>fixture</title><h1 id=h>dmarclens fixture page</h1>"
        "<script>console.error('deliberate console error')</script>"
    )
    page.goto(html.as_uri())
    assert page.locator("#h").inner_text() == "dmarclens fixture page"
    assert page.viewport_size == {"width": 1400, "height": 1000}
    shot = page.screenshot()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 1000
    assert page.console_errors == ["deliberate console error"]  # type: ignore[attr-defined]
    assert page.page_errors == []  # type: ignore[attr-defined]


def test_streamlit_app_served_and_seen_by_chromium(
    streamlit_server_factory: Callable[..., StreamlitServer], page: Page, tmp_path: Path
) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        "import os, plotly.express as px, streamlit as st\n"
        "st.title('dmarclens fixture app ' + os.environ['FIXTURE_WORD'])\n"
        "st.plotly_chart(px.bar(x=['pass', 'fail'], y=[90, 10]))\n"
        "if st.query_params.get('boom'): raise RuntimeError('deliberate failure')\n"
    )
    server = streamlit_server_factory(app, env={"FIXTURE_WORD": "ready"})

    page.goto(server.url)
    wait_for_app_idle(page)
    wait_for_plotly(page)
    assert page.get_by_text("dmarclens fixture app ready").is_visible()
    assert exceptions(page) == []

    page.goto(server.url + "/?boom=1")
    wait_for_app_idle(page)
    errors = exceptions(page)
    assert len(errors) == 1 and "deliberate failure" in errors[0]
    assert "Uvicorn server started" in server.log_text() or "You can now view" in server.log_text()
