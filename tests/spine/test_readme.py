"""The README is the user's contract: every command and its two set-up commands."""

from __future__ import annotations

import re

import click

from dmarclens.cli import cli
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_every_cli_command_is_in_the_readme_and_has_an_example() -> None:
    ctx = click.Context(cli)
    names = cli.list_commands(ctx)
    assert {"ingest", "query", "dashboard", "demo"} <= set(names)
    for name in names:
        assert f"dmarclens {name}" in README, f"`dmarclens {name}` is missing from README.md"
        cmd = cli.get_command(ctx, name)
        assert cmd is not None and "Example" in (cmd.help or ""), f"{name} --help has no Example"


def test_quickstart_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands = [line for b in blocks for line in b.strip().splitlines() if line.strip()]
    assert commands == ["pip install . && dmarclens demo", "bash scripts/test.sh"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci
