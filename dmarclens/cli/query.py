"""`dmarclens query`: SQL or a saved hunting query against the database, read-only."""

from __future__ import annotations

import click

from dmarclens.cli.common import db_option, resolve_db, run_guarded


@click.command()
@click.argument("sql", required=False)
@db_option
@click.option("--saved", "saved", metavar="NAME", default=None,
              help="Run a saved hunting query instead of SQL (see --list, docs/hunting.md).")
@click.option("--param", "params", metavar="NAME=VALUE", multiple=True,
              help="A parameter of the saved query; repeat for several.")
@click.option("--list", "list_saved", is_flag=True, help="List the saved queries, their purpose and parameters.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True, help="Output format; parquet needs --output.")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False), default=None,
              help="Write the result to FILE instead of stdout.")
def query(sql: str | None, db: str | None, saved: str | None, params: tuple[str, ...], list_saved: bool,
          fmt: str, output: str | None) -> None:
    """Run SQL or a saved hunting query against the database (opened read-only).

    The stable views are v_records (one row per record with report and source
    details), v_daily (per domain and day), v_sources (per domain and source
    IP) and v_reports (per report); see docs/schema.md. Saved queries hunt for
    abuse that passes DMARC; parameters are bound by DuckDB, never pasted into
    the SQL. Usage errors (unknown query or parameter, bad value) exit 2.

    \b
    Example:
      dmarclens query "SELECT domain, sum(count) FROM v_records GROUP BY 1" --format csv
      dmarclens query --list
      dmarclens query --saved new_passing_sources --param days=7
      dmarclens query --saved reject_impact --format parquet --output impact.parquet
    """
    from dmarclens.query import saved as saved_queries
    from dmarclens.store.db import connect

    if list_saved:
        if sql or saved or params:
            raise click.UsageError("--list takes no SQL, --saved or --param")
        text = run_guarded(saved_queries.catalog, fmt)
        if output:
            run_guarded(saved_queries.write_text, output, text)
        else:
            click.echo(text)
        return
    if sql and saved:
        raise click.UsageError("give either SQL or --saved NAME, not both")
    if not sql and not saved:
        raise click.UsageError(
            "give a SQL statement, e.g. dmarclens query \"SELECT * FROM v_daily LIMIT 5\", "
            "or --saved NAME (dmarclens query --list shows them)"
        )
    if params and not saved:
        raise click.UsageError("--param only goes with --saved NAME")
    if fmt == "parquet" and not output:
        raise click.UsageError("--format parquet writes a binary file: give --output FILE")
    if saved:
        # Validate name and parameters before touching the database.
        saved_query = run_guarded(saved_queries.get_query, saved)
        given = run_guarded(saved_queries.parse_param_args, params)
        values = run_guarded(saved_query.bind, given)
        statement, bound = saved_query.sql, values
    else:
        statement, bound = sql, None
    path = resolve_db(db)
    con = run_guarded(connect, path, read_only=True)
    try:
        cursor = run_guarded(saved_queries.execute, con, statement, bound)
        text = run_guarded(saved_queries.write_result, cursor, fmt, output)
    finally:
        con.close()
    if text is not None:
        click.echo(text)
