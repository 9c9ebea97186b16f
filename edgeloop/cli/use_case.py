"""`--use-case NAME` and `--use-case-file PATH`: the two options of every command that serves a use case.

    from edgeloop.cli.use_case import cli_use_case, use_case_file_option, use_case_option

    @app.command()
    def cmd(use_case: str = use_case_option(), use_case_file: Path = use_case_file_option()) -> None:
        config = cli_use_case(use_case, use_case_file)  # a UseCaseConfig, or exit 2 with the reason

Neither given: EDGELOOP_USE_CASE_FILE or EDGELOOP_USE_CASE from the environment (what `local up` writes
to local.env); nothing at all is an error. The resolution is edgeloop.schemas.use_case.resolve_use_case,
the same the functions' settings and the pipeline steps use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from edgeloop.schemas import names

if TYPE_CHECKING:
    from edgeloop.schemas.use_case import UseCaseConfig

USE_CASE_HELP = (
    f"a packaged use case (sagemaker_pipelines/use_cases/NAME.yaml); default: ${names.USE_CASE_ENV} "
    f"(or --use-case-file / ${names.USE_CASE_FILE_ENV})"
)
USE_CASE_FILE_HELP = (
    f"a use-case YAML (or .json) file anywhere, instead of --use-case; default: ${names.USE_CASE_FILE_ENV}"
)
errors = Console(stderr=True, soft_wrap=True)


def use_case_option(help: str = USE_CASE_HELP) -> Any:
    return typer.Option(None, "--use-case", help=help, show_default=False)


def use_case_file_option(help: str = USE_CASE_FILE_HELP) -> Any:
    return typer.Option(None, "--use-case-file", help=help, show_default=False, dir_okay=False)


def cli_use_case(use_case: str | None, use_case_file: Path | str | None, *, fail: bool = True) -> UseCaseConfig:
    """The use case the options (or, with neither, the environment) name. A missing or invalid file, an
    unknown name, or none at all: with `fail`, the reason on stderr and exit code 2; else UseCaseError."""
    from edgeloop.schemas.use_case import UseCaseError, resolve_use_case

    try:
        return resolve_use_case(use_case, use_case_file)
    except UseCaseError as exc:
        if not fail:
            raise
        errors.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(code=2) from None
