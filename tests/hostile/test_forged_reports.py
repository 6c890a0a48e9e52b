"""Forged-report defence (dmarclens/sources/mailauth.py): reports about other people's domains
are kept apart, and the mail that carried a report is checked for DKIM (keys
served by a real local DNS server) or a trusted Authentication-Results header.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import dkim
import pytest

from dmarclens.generator import attachment_for, render_report, report_email
from tests.hostile.cases import OWNED, meta, spec
from tests.hostile.helpers import clean_env, rows, run_measured
from tests.imap.helpers import ARCHIVE, count, fetch_args
from tests.servers.dns import DNSServer
from tests.servers.plugin import ImapAccount

SELECTOR = "dmarc2026"


class Keys:
    """RSA keys per signing domain, published in the test DNS as DKIM TXT records."""

    def __init__(self, dns: DNSServer, folder: Path) -> None:
        self.dns = dns
        self.folder = folder
        self.private: dict[str, bytes] = {}

    def key_for(self, domain: str) -> bytes:
        if domain not in self.private:
            pem = subprocess.run(["openssl", "genrsa", "2048"], capture_output=True, check=True).stdout
            der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=pem,
                                 capture_output=True, check=True).stdout
            self.dns.zone.add_txt(f"{SELECTOR}._domainkey.{domain}",
                                  f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}")
            self.private[domain] = pem
        return self.private[domain]

    def sign(self, message: bytes, domain: str) -> bytes:
        sig = dkim.sign(message, SELECTOR.encode(), domain.encode(), self.key_for(domain),
                        include_headers=[b"from", b"to", b"subject", b"message-id", b"date"])
        return sig + message


@pytest.fixture
def keys(dns_server: DNSServer, tmp_path: Path) -> Keys:
    return Keys(dns_server, tmp_path)


def report_mail(report_id: str, *, org: str = "google.com", sender: str = "noreply-dmarc-support@google.com",
                domain: str = OWNED, headers: bytes = b"") -> bytes:
    s = spec(report_id, org=org, domain=domain)
    mail = report_email([attachment_for(s, render_report(s), "gzip")], meta(report_id, sender))
    return headers + mail


def dns_env(dns: DNSServer, **extra: str) -> dict[str, str]:
    return clean_env({"DMARCLENS_DKIM_NAMESERVER": f"{dns.host}:{dns.port}", "DMARCLENS_DKIM_TIMEOUT": "2",
                      **extra})


def ingest(folder: Path, db: Path, env: dict[str, str]) -> dict:
    run = run_measured(["ingest", str(folder), "--db", str(db), "--json"], cwd=folder.parent, env=env)
    assert run.returncode in (0, 3), run.stderr
    assert "Traceback" not in run.stderr
    return json.loads(run.stdout)


def trust(db: Path) -> dict[str, tuple[str, str | None, str | None, str]]:
    return {rid: (auth, method, dom, detail) for rid, auth, method, dom, detail in rows(
        db, "SELECT report_id, mail_auth, auth_method, auth_domain, auth_detail FROM v_report_trust")}


def test_dkim_verdicts_for_report_mail(keys: Keys, dns_server: DNSServer, tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    # Signed, then changed in transit (a signed header edited): the signature no longer verifies.
    tampered = keys.sign(report_mail("tampered"), "google.com").replace(b"Report Domain: example.com",
                                                                        b"Report Domain: examp1e.com")
    cases: dict[str, bytes] = {
        "signed": keys.sign(report_mail("signed"), "google.com"),
        "unsigned": report_mail("unsigned"),
        "tampered": tampered,
        # A real signature of the attacker's own domain, on a report that claims to be Google's.
        "own-domain": keys.sign(report_mail("own-domain", sender="dmarc@attacker.example"), "attacker.example"),
        # Google's signature, but the visible sender is someone else: not aligned.
        "misaligned": keys.sign(report_mail("misaligned", sender="dmarc@attacker.example"), "google.com"),
        "subdomain": keys.sign(report_mail("subdomain", sender="noreply@dmarc.google.com"), "mail.google.com"),
    }
    for name, data in cases.items():
        (folder / f"{name}.eml").write_bytes(data)
    (folder / "plain-file.xml").write_bytes(render_report(spec("plain-file")))
    db = tmp_path / "t.duckdb"

    ingest(folder, db, dns_env(dns_server))

    got = trust(db)
    assert got["signed"][:3] == ("verified", "dkim", "google.com")
    assert got["subdomain"][:3] == ("verified", "dkim", "mail.google.com")
    assert got["unsigned"][0] == "unverified" and "no DKIM signature" in got["unsigned"][3]
    assert got["tampered"][0] == "unverified" and "did not verify" in got["tampered"][3]
    assert got["own-domain"][0] == "unverified"
    assert "claims to come from google.com" in got["own-domain"][3]
    assert got["misaligned"][0] == "unverified" and "attacker.example" in got["misaligned"][3]
    assert got["plain-file"][0] == "not_mail"
    # the keys really came from the local DNS server
    assert any(name == f"{SELECTOR}._domainkey.google.com" for name, _t, _p in dns_server.queries)


def test_trusted_authentication_results_count_and_forged_ones_do_not(dns_server: DNSServer, tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    ours = b"Authentication-Results: mx.example.com; dkim=pass header.d=google.com; dmarc=pass header.from=google.com\r\n"
    theirs = b"Authentication-Results: evil.example; dkim=pass header.d=google.com; dmarc=pass header.from=google.com\r\n"
    failing = b"Authentication-Results: mx.example.com; dkim=fail header.d=google.com; dmarc=fail header.from=google.com\r\n"
    (folder / "trusted.eml").write_bytes(report_mail("trusted", headers=ours))
    (folder / "forged-ar.eml").write_bytes(report_mail("forged-ar", headers=theirs))
    (folder / "failed-ar.eml").write_bytes(report_mail("failed-ar", headers=failing))
    db = tmp_path / "t.duckdb"

    ingest(folder, db, dns_env(dns_server, DMARCLENS_TRUSTED_AUTHSERV_IDS="mx.example.com"))

    got = trust(db)
    assert got["trusted"][0] == "verified"
    assert got["trusted"][1].startswith("authentication-results") and got["trusted"][2] == "google.com"
    assert got["forged-ar"][0] == "unverified"
    assert got["failed-ar"][0] == "unverified"


def test_dns_that_never_answers_leaves_reports_unverified_but_stored(keys: Keys, dns_server: DNSServer,
                                                                     tmp_path: Path) -> None:
    folder = tmp_path / "mail"
    folder.mkdir()
    for i in range(3):
        (folder / f"m{i}.eml").write_bytes(keys.sign(report_mail(f"slow{i}"), "google.com"))
    dns_server.mode = "timeout"
    db = tmp_path / "t.duckdb"

    out = ingest(folder, db, dns_env(dns_server, DMARCLENS_DKIM_TIMEOUT="1"))

    assert out["stored"] == 3
    assert {v[0] for v in trust(db).values()} == {"unverified"}
    # one lookup per key, not per mail: a dead resolver costs one timeout per run
    assert len([q for q in dns_server.queries if q[0].startswith(SELECTOR)]) <= 3


def test_imap_delivered_reports_record_their_verdict(keys: Keys, dns_server: DNSServer, imap_account: ImapAccount,
                                                     tmp_path: Path) -> None:
    imap_account.server.append(imap_account.user, "INBOX", keys.sign(report_mail("imap-signed"), "google.com"))
    imap_account.server.append(imap_account.user, "INBOX", report_mail("imap-forged"))
    db = tmp_path / "imap.duckdb"
    env = dns_env(dns_server, DMARCLENS_IMAP_PASSWORD=imap_account.password)

    run = run_measured(fetch_args(imap_account, db, "--json"), cwd=tmp_path, env=env)

    assert run.returncode == 0, run.stderr
    got = trust(db)
    assert got["imap-signed"][0] == "verified" and got["imap-forged"][0] == "unverified"
    # an unverified report is still stored and its mail archived: the verdict is for the reader
    assert count(imap_account, ARCHIVE) == 2


def test_the_domain_list_moves_reports_between_counted_and_hidden(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "mine.xml").write_bytes(render_report(spec("mine")))
    (folder / "theirs.xml").write_bytes(render_report(spec("theirs", domain="other.example")))
    (folder / "sub.xml").write_bytes(render_report(spec("sub", domain=f"mail.{OWNED}")))
    db = tmp_path / "d.duckdb"

    def counted() -> dict[str, int]:
        return dict(rows(db, "SELECT domain, sum(messages)::INT FROM rollup_source_daily GROUP BY 1"))

    def visible() -> set[str]:
        return {d for (d,) in rows(db, "SELECT DISTINCT domain FROM v_records")}

    def run(domains: str | None, path: Path = folder) -> None:
        env = clean_env({"DMARCLENS_DOMAINS": domains} if domains else {})
        out = run_measured(["ingest", str(path), "--db", str(db)], cwd=tmp_path, env=env)
        assert out.returncode == 0, out.stderr

    run(OWNED)
    assert visible() == {OWNED, f"mail.{OWNED}"} and "other.example" not in counted()
    run(f"{OWNED},other.example")  # the owner adds a domain: its report is counted from now on
    assert visible() == {OWNED, f"mail.{OWNED}", "other.example"} and counted()["other.example"] == 127
    run(OWNED)  # and removes it again
    assert "other.example" not in visible() and "other.example" not in counted()
    run(None)  # a run without any list keeps the remembered one: nothing is exposed again
    assert "other.example" not in visible()
    assert rows(db, "SELECT count(*) FROM foreign_records") == [(2,)]
    assert rows(db, "SELECT sum(count) FROM records") == [(254,)]


def test_query_layer_lists_hidden_and_unverified_reports(tmp_path: Path, dns_server: DNSServer) -> None:
    from dmarclens.query.reports import hidden_reports, report_trust_summary, unverified_reports
    from dmarclens.store.db import connect
    from dmarclens.store.sql import counted_reports, trusted_report_keys_sql

    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "theirs.xml").write_bytes(render_report(spec("theirs", domain="other.example")))
    (folder / "forged.eml").write_bytes(report_mail("forged"))
    (folder / "mine.xml").write_bytes(render_report(spec("mine")))
    db = tmp_path / "q.duckdb"
    ingest(folder, db, dns_env(dns_server, DMARCLENS_DOMAINS=OWNED))

    con = connect(db, read_only=True)
    try:
        hidden = hidden_reports(con)
        assert list(hidden["domain"]) == ["other.example"] and int(hidden["messages"].iloc[0]) == 127
        summary = report_trust_summary(con)
        assert summary == {"verified": 0, "unverified": 1, "not_mail": 2, "not_checked": 0, "hidden": 1}
        unverified = unverified_reports(con)
        assert list(unverified["report_id"]) == ["forged"]
        assert "no DKIM signature" in unverified["auth_detail"].iloc[0]
        keys_sql = trusted_report_keys_sql(con, ignore_unverified=True)
        kept = {r for (r,) in con.execute(f"SELECT report_id FROM reports WHERE report_key IN ({keys_sql})").fetchall()}
        assert kept == {"mine"}
        listed = con.execute(f"SELECT DISTINCT domain FROM {counted_reports(con)} ORDER BY 1").fetchall()
        assert listed == [(OWNED,)]  # the domain selector would not offer other.example
        assert {r for (r,) in con.execute(f"SELECT report_id FROM {counted_reports(con, ignore_unverified=True)}"
                                          ).fetchall()} == {"mine"}
    finally:
        con.close()



def test_detection_can_be_told_to_ignore_unverified_reports(sample_db: Path, tmp_path: Path) -> None:
    """A forged report (unsigned mail claiming to be Google's) plants a spoofing burst on the last
    day; detection flags it, unless told to ignore unverified reports."""
    import shutil
    from datetime import UTC, datetime

    from dmarclens.generator import RecordSpec, SpfAuth

    [(last_day,)] = rows(sample_db, "SELECT max(day) FROM records")
    begin = int(datetime(last_day.year, last_day.month, last_day.day, tzinfo=UTC).timestamp())
    spoof_ip = "198.51.100.78"
    records = [RecordSpec(source_ip=spoof_ip, count=9000, header_from=OWNED, dkim_eval="fail", spf_eval="fail",
                          envelope_from="spoof.example", spf=(SpfAuth("spoof.example", "fail"),))]
    s = spec("forged-burst", begin=begin, records=records)
    mail = tmp_path / "forged.eml"
    mail.write_bytes(report_email([attachment_for(s, render_report(s), "gzip")], meta("forged-burst")))
    assert ingest(mail.parent, sample_db, clean_env())["stored"] == 1
    assert rows(sample_db, "SELECT mail_auth FROM v_report_trust WHERE report_id = 'forged-burst'") == [
        ("unverified",)]
    plain, strict = tmp_path / "plain.duckdb", tmp_path / "strict.duckdb"
    shutil.copy(sample_db, plain)
    shutil.copy(sample_db, strict)

    for db, extra in ((plain, []), (strict, ["--ignore-unverified"])):
        run = run_measured(["detect", "--db", str(db), *extra], cwd=tmp_path, env=clean_env())
        assert run.returncode == 0, run.stderr

    def flagged(db: Path) -> set[str]:
        return {ip for (ips,) in rows(db, "SELECT ips FROM anomalies") for ip in ips or []}

    assert spoof_ip in flagged(plain)
    assert spoof_ip not in flagged(strict)
