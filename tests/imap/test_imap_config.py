"""ImapSettings: one precedence rule per key (CLI > env > config), [[mailboxes]] inheriting [imap],
and secrets that can only come from the places meant for them."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import pytest

from dmarclens.core.errors import ConfigError
from dmarclens.sources.imap.settings import load_imap_settings, resolve_credentials

RAW = {
    "imap": {"host": "imap.example.com", "user": "dmarc@example.com", "batch_size": 50, "tls": "starttls"},
    "mailboxes": [
        {"name": "main"},
        {"name": "legacy", "user": "rua@old.example", "folder": "Reports/DMARC", "port": 10143},
    ],
}


def test_mailboxes_inherit_imap_defaults_and_keep_their_own_keys() -> None:
    main, legacy = load_imap_settings(RAW, env={})

    assert (main.host, main.user, main.batch_size, main.effective_port) == (
        "imap.example.com", "dmarc@example.com", 50, 143)
    assert (legacy.user, legacy.folder, legacy.effective_port) == ("rua@old.example", "Reports/DMARC", 10143)
    assert legacy.label == "rua@old.example@imap.example.com:10143/Reports/DMARC"
    assert [m.name for m in load_imap_settings(RAW, mailbox="legacy", env={})] == ["legacy"]
    with pytest.raises(ConfigError, match="no \\[\\[mailboxes\\]\\] entry named 'nope' \\(named: main, legacy\\)"):
        load_imap_settings(RAW, mailbox="nope", env={})


def test_cli_beats_environment_beats_config() -> None:
    env = {"DMARCLENS_IMAP_BATCH_SIZE": "7", "DMARCLENS_IMAP_HOST": "env.example"}
    [s] = load_imap_settings({"imap": RAW["imap"]}, {"host": "cli.example", "since": date(2026, 1, 2)}, env=env)

    assert (s.host, s.batch_size, s.since, s.tls) == ("cli.example", 7, date(2026, 1, 2), "starttls")


def test_only_the_command_line_is_enough() -> None:
    [s] = load_imap_settings({}, {"host": "h", "user": "u"}, env={})
    assert (s.tls, s.effective_port, s.folder, s.archive_folder, s.invalid_folder) == (
        "implicit", 993, "INBOX", "DMARC/Archive", "DMARC/Invalid")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"imap": {"host": "h", "user": "u", "password": "hunter2"}}, "`password` is not allowed in a config file"),
        ({"imap": {"host": "h", "user": "u", "hots": "x"}}, "unknown key `hots`"),
        ({"imap": {"host": "h", "user": "u", "tls": "maybe"}}, "tls = 'maybe' is not valid"),
        ({"imap": {"host": "h", "user": "u", "batch_size": 0}}, "batch_size = 0 is not valid"),
        ({"imap": {"host": "h", "user": "u", "since": "last week"}}, "a date like 2026-01-31"),
        ({"imap": {"user": "u"}}, "no IMAP host given"),
        ({"imap": {"host": "h", "user": "u", "archive_folder": "INBOX"}}, "must differ from the folder read"),
        ({"imap": {"host": "h", "user": "u", "insecure": True, "ca_file": __file__}}, "contradict"),
    ],
)
def test_bad_settings_are_usage_errors_that_say_what_is_wrong(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", "\\[").replace("(", "\\(")) as info:
        load_imap_settings(raw, env={})
    assert info.value.exit_code == 2
    assert "hunter2" not in str(info.value)


def test_password_sources_in_order_and_never_in_repr(tmp_path: Path) -> None:
    cli_file, cfg_file = tmp_path / "cli", tmp_path / "cfg"
    cli_file.write_text("from-cli-file\n")
    cfg_file.write_text("from-config-file\n")
    command = f"{sys.executable} -c \"print('from-command')\""
    [s] = load_imap_settings({"imap": {"host": "h", "user": "u", "password_file": str(cfg_file),
                                       "password_command": command}}, env={})
    env = {"DMARCLENS_IMAP_PASSWORD": "from-env"}

    assert resolve_credentials(s, cli_password_file=cli_file, env=env).password == "from-cli-file"
    assert resolve_credentials(s, env=env).password == "from-env"
    assert resolve_credentials(s, env={}).password == "from-config-file"
    [only_cmd] = load_imap_settings({"imap": {"host": "h", "user": "u", "password_command": command}}, env={})
    creds = resolve_credentials(only_cmd, env={})
    assert creds.password == "from-command"
    assert "from-command" not in repr(creds)

    [oauth] = load_imap_settings({"imap": {"host": "h", "user": "u"}},
                                 {"oauth2_token_command": f"{sys.executable} -c \"print('tok')\""}, env={})
    assert resolve_credentials(oauth, env=env).oauth2_token == "tok"

    [none] = load_imap_settings({"imap": {"host": "h", "user": "u"}}, env={})
    with pytest.raises(ConfigError, match="no password: set \\$DMARCLENS_IMAP_PASSWORD"):
        resolve_credentials(none, env={})
    [failing] = load_imap_settings({"imap": {"host": "h", "user": "u", "password_command": "false"}}, env={})
    with pytest.raises(ConfigError, match="password_command 'false' failed with exit code 1"):
        resolve_credentials(failing, env={})
