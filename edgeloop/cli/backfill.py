"""`edgeloop backfill FILE... --mapping M --line L`: historical recordings into the data lake.

The samples meet ingest's validation and quarantine (without the lateness SLA) and land in curated/
at once; the mapping's `context:` block (runs, limits, states) goes through the context path. How
and why: edgeloop/backfill/ (its package docstring). The data bucket and AWS endpoint come from the
environment (`source DIR/local.env` after `edgeloop local up --dir DIR`, or `--dir DIR`; with neither,
the default `local up` folder .edgeloop/local when it holds a local.env), the use
case from --use-case / --use-case-file or EDGELOOP_USE_CASE(_FILE).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console

from edgeloop.cli.use_case import cli_use_case, use_case_file_option, use_case_option
from edgeloop.schemas import names

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def backfill_command(
    files: list[Path] = typer.Argument(..., help="recorded CSV or Parquet files of one line", dir_okay=False),
    mapping: Path = typer.Option(..., "--mapping", help="replay mapping (YAML): columns, timestamp, context"),
    line: str = typer.Option(..., "--line", help="the line the recordings belong to, e.g. line-1"),
    thing: str = typer.Option(
        None, "--thing", help="thing the samples are stored under (default: the mapping's, else backfill-<line>)"
    ),
    use_case: str = use_case_option(),
    use_case_file: Path = use_case_file_option(),
    local_dir: Path = typer.Option(
        None,
        "--dir",
        help=f"an `edgeloop local up --dir` folder: read its {names.LOCAL_ENV_FILE} first (default, when "
        f"${names.DATA_BUCKET_ENV} is unset: .edgeloop/local, if `local up` runs there)",
    ),
    bucket: str = typer.Option(None, "--bucket", help=f"data bucket (default: ${names.DATA_BUCKET_ENV})"),
) -> None:
    """Land historical recordings: ingest's validation and quarantine, no lateness SLA, straight to curated."""
    from edgeloop.backfill import BackfillError, plan_backfill, run_backfill
    from edgeloop.cloud.settings import temporary_environment

    if local_dir is None and not os.environ.get(names.DATA_BUCKET_ENV):
        from edgeloop.cli.local import DEFAULT_DIR

        local_dir = DEFAULT_DIR if (DEFAULT_DIR / names.LOCAL_ENV_FILE).exists() else None
    overrides = _local_env(local_dir) if local_dir is not None else {}
    with temporary_environment(overrides):
        if overrides:
            from edgeloop.cloud.aws import reset_clients

            reset_clients()
        config = cli_use_case(use_case, use_case_file)
        data_bucket = bucket or os.environ.get(names.DATA_BUCKET_ENV)
        if not data_bucket:
            _fail(
                f"{names.DATA_BUCKET_ENV} is not set: `source DIR/{names.LOCAL_ENV_FILE}` after "
                "`edgeloop local up --dir DIR` (or pass --dir DIR, or --bucket)"
            )
        try:
            plan = plan_backfill(files, mapping, line_id=line, use_case=config, thing_name=thing, lines=_registry())
            reports = run_backfill(plan, data_bucket)
        except BackfillError as exc:
            _fail(str(exc))
    for report in reports:
        summary = report.to_dict()
        summary["partitions"] = len(report.partitions)
        console.print_json(json.dumps(summary))
        if report.duplicate_run:
            errors.print(f"{report.file}: already backfilled ({report.lineage_key}): nothing landed again")


def _local_env(local_dir: Path) -> dict[str, str]:
    from edgeloop.local.env_file import env_file_path, read_env_file

    path = env_file_path(local_dir)
    if not path.exists():
        _fail(f"--dir {local_dir}: no {names.LOCAL_ENV_FILE} there (is `edgeloop local up --dir {local_dir}` running?)")
    try:
        return read_env_file(path)
    except ValueError as exc:
        _fail(str(exc))


def _registry():
    """The IoT registry (a thing it knows must be on --line); unreachable: the error, not a guess."""
    from edgeloop.cloud.line_directory import IotLineDirectory

    return _CheckedRegistry(IotLineDirectory())


class _CheckedRegistry:
    def __init__(self, inner) -> None:
        self.inner = inner

    def line_of(self, thing_name: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.inner.line_of(thing_name)
        except (ClientError, BotoCoreError) as exc:
            _fail(f"--thing {thing_name}: cannot ask the IoT registry for its line: {exc}")


def _fail(message: str) -> None:
    errors.print(f"[red]backfill:[/] {message}", highlight=False)
    raise typer.Exit(code=2)
