"""`dmarclens schema-docs`: docs/schema.md from the live schema, or a check that it is current."""

from __future__ import annotations

from pathlib import Path

import click

from dmarclens.cli.common import fail, run_guarded


@click.command("schema-docs")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default="docs/schema.md", show_default=True)
@click.option("--check", is_flag=True, help="Exit 1 if the file differs from the live schema instead of writing it.")
def schema_docs(output: str, check: bool) -> None:
    """Write docs/schema.md from a freshly migrated database's own comments.

    \b
    Example:
      dmarclens schema-docs --check
    """
    from dmarclens.store.docs import render_schema_markdown

    text = run_guarded(render_schema_markdown)
    out = Path(output)
    if check:
        current = out.read_text(encoding="utf-8") if out.exists() else ""
        if current != text:
            fail(f"{out} is stale; run `dmarclens schema-docs` to regenerate it")
        click.echo(f"{out} is up to date", err=True)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}", err=True)
