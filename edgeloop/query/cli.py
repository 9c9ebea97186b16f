"""`edgeloop query ...`: run a named query on DuckDB (local Parquet) or Athena, print a table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

query_app = typer.Typer(no_args_is_help=True, help="Named SQL over the data bucket: DuckDB locally, Athena in AWS.")
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def parse_params(pairs: list[str]) -> dict[str, str]:
    """`k=v` strings as a dict; a pair without '=' or a repeated key is refused, naming it."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {pair!r} is not key=value")
        if key.strip() in params:
            raise ValueError(f"--param {key.strip()!r} is given twice ({params[key.strip()]!r} and {value!r})")
        params[key.strip()] = value
    return params


@query_app.command("list")
def list_queries() -> None:
    """The named queries and their parameters."""
    from .named import queries

    table = Table(title="Named queries (edgeloop/query/sql)")
    for column in ("name", "parameters", "description"):
        table.add_column(column)
    for query in queries().values():
        params = ", ".join(
            f"{p.name}:{p.type}" + (f"({'|'.join(p.choices)})" if p.choices else "") for p in query.parameters
        )
        table.add_row(query.name, params, query.description)
    console.print(table)


@query_app.command("run")
def run(
    name: str = typer.Argument(..., help="a named query (see `edgeloop query list`)"),
    param: list[str] = typer.Option([], "--param", "-p", help="key=value; repeat for each parameter"),
    root: Path = typer.Option(None, "--root", help="DuckDB over Parquet mirrored under this directory"),
    bucket: str = typer.Option(None, "--bucket", help="with --root: mirror this data bucket's tables first"),
    workgroup: str = typer.Option(None, "--athena-workgroup", help="run on Athena in this workgroup"),
    database: str = typer.Option(None, "--database", help="with --athena-workgroup: the Glue database"),
    show_sql: bool = typer.Option(False, "--sql", help="print the bound SQL instead of running it"),
    limit: int = typer.Option(200, "--limit", help="rows to print (the query itself is not limited)"),
) -> None:
    """Run NAME with its parameters and print the result."""
    from .named import QueryParameterError, UnknownQueryError, render

    try:
        params = parse_params(param)
        if show_sql:
            console.print(render(name, **params), markup=False, highlight=False)
            return
        engine = _engine(root, bucket, workgroup, database)
        frame = engine.run(name, **params)
    except (ValueError, QueryParameterError, UnknownQueryError) as exc:
        errors.print(f"[red]error:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from exc
    console.print(frame_table(frame, title=f"{name}: {len(frame):,} rows", limit=limit))


def _engine(root: Path | None, bucket: str | None, workgroup: str | None, database: str | None):
    if (root is None) == (workgroup is None):
        raise ValueError("give either --root DIR (DuckDB) or --athena-workgroup W --database D (Athena)")
    if workgroup is not None:
        if not database or bucket:
            raise ValueError(f"--athena-workgroup={workgroup!r} needs --database and takes no --bucket")
        from .athena_engine import AthenaEngine

        return AthenaEngine(workgroup, database)
    from .duckdb_engine import DuckDbEngine

    if bucket:
        from .mirror import mirror_tables

        result = mirror_tables(bucket, root)
        errors.print(
            f"mirrored s3://{bucket}: {len(result.downloaded)} copied, {result.unchanged} unchanged, "
            f"{len(result.removed)} removed",
            highlight=False,
        )
    if not root.is_dir():
        raise ValueError(f"--root={str(root)!r} is not a directory")
    return DuckDbEngine(root)


def frame_table(frame, *, title: str, limit: int) -> Table:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column), justify="right" if frame[column].dtype.kind in "iuf" else "left")
    for row in frame.head(limit).itertuples(index=False):
        table.add_row(*("" if _missing(v) else f"{v:.6g}" if isinstance(v, float) else str(v) for v in row))
    if len(frame) > limit:
        table.caption = f"first {limit} of {len(frame):,} rows"
    return table


def _missing(value) -> bool:
    try:
        return value is None or value != value  # NaN and pd.NA compare unequal to themselves
    except TypeError:  # pd.NA refuses bool()
        return True
