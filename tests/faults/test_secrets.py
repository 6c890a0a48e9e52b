"""Secrets never leak: a known IMAP password and a known OAuth2 token are looked for
in the process arguments, the logs (at -vv), every error message, the --json
output, the database (every string and the raw file bytes) and every file the
runs left behind, after good runs and failing ones."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time
from pathlib import Path

from tests.faults.test_kill_fetch import fill
from tests.hostile.cases import good_mail
from tests.hostile.helpers import all_strings, clean_env
from tests.imap.helpers import fetch_args
from tests.servers.plugin import ImapAccount


def run_watched(args: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[int, str, str, list[str]]:
    """Run the CLI and sample its command line from /proc while it runs."""
    proc = subprocess.Popen([sys.executable, "-m", "dmarclens", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    argv: list[str] = []
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            argv.append(Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace"))
        time.sleep(0.02)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err, argv


def test_password_and_token_appear_nowhere(imap_account: ImapAccount, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    password = imap_account.password
    assert len(password) >= 8
    token = imap_account.server.add_token(imap_account.user, "tok-" + secrets.token_urlsafe(18))
    token_file = tmp_path / "token"  # outside the work folder: the only file allowed to hold it
    token_file.write_text(token + "\n")
    bad_token_file = tmp_path / "bad-token"
    bad_token_file.write_text(token + "-revoked\n")  # unknown to the server, and holds the real token
    password_file = tmp_path / "password"
    password_file.write_text(password + "\n")
    fill(imap_account, [good_mail(f"sec-{i}") for i in range(4)])
    db = work / "s.duckdb"
    env_pw = clean_env({"DMARCLENS_IMAP_PASSWORD": password})
    runs = [
        # good runs, as verbose as it gets
        (["-vv", *fetch_args(imap_account, db, "--json")], env_pw),
        (["-vv", *fetch_args(imap_account, db, "--json", "--oauth2-token-command", f"cat {token_file}")],
         clean_env()),
        (["-vv", *fetch_args(imap_account, db, "--json", "--password-file", str(password_file))], clean_env()),
        (["-vv", *fetch_args(imap_account, db, "--dry-run", "--json")], env_pw),
        # failing ones: a wrong password whose text contains the real one, an unknown token, a locked-out DB path
        (["-vv", *fetch_args(imap_account, db, "--json")], clean_env({"DMARCLENS_IMAP_PASSWORD": password + "x"})),
        (["-vv", *fetch_args(imap_account, db, "--json", "--oauth2-token-command", f"cat {bad_token_file}")],
         clean_env()),
        (["-vv", *fetch_args(imap_account, work / "missing" / "x.duckdb", "--json")], env_pw),
    ]
    seen: list[str] = []
    codes = []
    for args, env in runs:
        code, out, err, argv = run_watched(args, cwd=work, env=env)
        codes.append(code)
        seen += [out, err, *argv]
    assert codes[:4] == [0, 0, 0, 0], codes
    assert all(c == 1 for c in codes[4:]), codes
    for secret in (password, token):
        leaks = [text for text in seen if secret in text]
        assert not leaks, f"secret found in output or argv: {leaks[:1]}"
        assert secret not in "".join(v for _, _, v in all_strings(db))
        for path in work.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
    assert any(r["token"] == token for r in imap_account.server.oauth.requests)  # the token was really used
