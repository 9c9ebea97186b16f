"""`edgeloop labels review`: list the label proposals waiting for a person, accept or correct them."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

import typer
from botocore.exceptions import ClientError
from rich.console import Console
from rich.table import Table

from edgeloop.schemas import names

labels_app = typer.Typer(no_args_is_help=True, help="Semi-automatic labels: the review queue of unlabeled packs.")
# Piped or captured output would squeeze the table to 80 columns and cut the ids people must copy.
console = Console() if sys.stdout.isatty() else Console(width=160)
errors = Console(stderr=True, soft_wrap=True)
CLASSES = ("lsl_violation", "in_range", "usl_violation")


@labels_app.callback()
def _group() -> None:
    """Semi-automatic labels: the review queue of unlabeled packs."""


@labels_app.command("review")
def review_command(
    line: str = typer.Option(None, "--line", help="only this line's queue (default: every line)"),
    data_bucket: str = typer.Option(
        None, "--data-bucket", help=f"default: ${names.DATA_BUCKET_ENV}, else {names.LOCAL_DATA_BUCKET}"
    ),
    accept: str = typer.Option(None, "--accept", metavar="ID", help="accept this proposal's label"),
    correct: str = typer.Option(
        None, "--correct", metavar="ID", help="correct this proposal (with --value or --class)"
    ),
    value: float = typer.Option(None, "--value", help="with --correct: the true target value"),
    label_class: str = typer.Option(None, "--class", help=f"with --correct: the true class ({', '.join(CLASSES)})"),
    reviewer: str = typer.Option(None, "--reviewer", help="who decides (default: $USER)"),
    interactive: bool = typer.Option(False, "--interactive", "-i", help="decide pending proposals one by one"),
) -> None:
    """List pending proposals; or decide one (--accept / --correct); or go through them (--interactive)."""
    bucket = data_bucket or os.environ.get(names.DATA_BUCKET_ENV) or names.LOCAL_DATA_BUCKET
    try:
        if accept and correct:
            raise ValueError(f"--accept {accept} and --correct {correct}: decide one proposal at a time")
        if (value is not None or label_class is not None) and not correct:
            raise ValueError("--value and --class go with --correct ID")
        if correct and value is None and label_class is None:
            raise ValueError(f"--correct {correct} needs --value or --class")
        if accept or correct:
            _decide_one(bucket, line, accept or correct, _who(reviewer), value=value, label_class=label_class)
        elif interactive:
            _interactive(bucket, line, _who(reviewer))
        else:
            _list_pending(bucket, line)
    except (LookupError, ValueError) as exc:
        errors.print(f"[red]error:[/] {exc.args[0] if exc.args else exc}", highlight=False)
        raise typer.Exit(code=1) from None
    except ClientError as exc:  # e.g. no such bucket, or no credentials for it
        errors.print(f"[red]error:[/] --data-bucket {bucket!r}: {exc}", highlight=False)
        raise typer.Exit(code=1) from None


def _who(reviewer: str | None) -> str:
    who = reviewer or os.environ.get("USER")
    if not who:
        raise ValueError("--reviewer is not given and $USER is not set: say who decides")
    return who


def _list_pending(bucket: str, line: str | None) -> None:
    from edgeloop.cloud.packing.label_review import proposals
    from edgeloop.schemas.training import ProposalStatus

    pending = proposals(bucket, line, status=ProposalStatus.PENDING)
    where = f"line {line}" if line else "every line"
    if not pending:
        console.print(f"no pending label proposals on {where} (s3://{bucket})", highlight=False)
        return
    console.print(proposal_table(pending, title=f"Pending label proposals, {where} ({len(pending)})"))


def proposal_table(pending: list, title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "line", "run", "window (UTC)", "proposed class", "label", "confidence", "spec limits"):
        table.add_column(column)
    for p in pending:
        table.add_row(
            p.proposal_id,
            p.line_id,
            p.run_id,
            f"{p.window_start:%Y-%m-%d %H:%M:%S} - {p.window_end:%H:%M:%S}",
            p.proposed_class.value if p.proposed_class else "-",
            f"{p.proposed_label:.4g}" if p.proposed_label is not None else "-",
            f"{p.confidence:.1%}",
            f"[{p.spec_lower:g}, {p.spec_upper:g}]",
        )
    return table


def _decide_one(
    bucket: str, line: str | None, proposal_id: str, reviewer: str, *, value: float | None, label_class: str | None
):
    from edgeloop.cloud.packing.label_review import decide

    decided = decide(bucket, _decision(proposal_id, reviewer, value=value, label_class=label_class), line_id=line)
    console.print(
        f"{decided.proposal_id} {decided.status.value} by {decided.reviewer}: label {decided.final_label:.6g} "
        f"({decided.final_class.value})",
        highlight=False,
    )
    return decided


def _decision(proposal_id: str, reviewer: str, *, value: float | None = None, label_class: str | None = None):
    from pydantic import ValidationError

    from edgeloop.schemas.training import ReviewAction, ReviewDecision

    if label_class is not None and label_class not in CLASSES:
        raise ValueError(f"--class {label_class!r} is not one of {', '.join(CLASSES)}")
    correcting = value is not None or label_class is not None
    try:
        return ReviewDecision(
            proposal_id=proposal_id,
            action=ReviewAction.CORRECT if correcting else ReviewAction.ACCEPT,
            reviewer=reviewer,
            decided_at=datetime.now(UTC),
            value=value,
            label_class=label_class,
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(map(str, problem["loc"])) or "decision"
        raise ValueError(f"{field}={problem.get('input')!r}: {problem['msg']}") from None


def _interactive(bucket: str, line: str | None, reviewer: str) -> None:
    from edgeloop.cloud.packing.label_review import proposals
    from edgeloop.schemas.training import ProposalStatus

    pending = proposals(bucket, line, status=ProposalStatus.PENDING)
    counts = {"accepted": 0, "corrected": 0, "skipped": 0}
    for number, proposal in enumerate(pending, start=1):
        console.print(proposal_table([proposal], title=f"Proposal {number} of {len(pending)}"))
        choice = _ask("[a]ccept, [c]orrect, [s]kip, [q]uit", {"a", "c", "s", "q"})
        if choice == "q":
            break
        if choice == "s":
            counts["skipped"] += 1
            continue
        try:
            if choice == "a":
                _decide_one(bucket, proposal.line_id, proposal.proposal_id, reviewer, value=None, label_class=None)
                counts["accepted"] += 1
            else:
                value, label_class = _ask_correction()
                _decide_one(
                    bucket, proposal.line_id, proposal.proposal_id, reviewer, value=value, label_class=label_class
                )
                counts["corrected"] += 1
        except (LookupError, ValueError) as exc:  # e.g. decided meanwhile by someone else: go on
            errors.print(f"[yellow]not decided:[/] {exc}", highlight=False)
            counts["skipped"] += 1
    console.print(", ".join(f"{n} {what}" for what, n in counts.items()), highlight=False)


def _ask(question: str, answers: set[str]) -> str:
    while True:
        answer = typer.prompt(question).strip().lower()[:1]
        if answer in answers:
            return answer
        console.print(f"answer one of {', '.join(sorted(answers))}", highlight=False)


def _ask_correction() -> tuple[float | None, str | None]:
    """A target value (a number) or a class name; asked again until it is one of them."""
    while True:
        answer = typer.prompt(f"true value, or class ({', '.join(CLASSES)})").strip()
        if answer in CLASSES:
            return None, answer
        try:
            number = float(answer)
        except ValueError:
            console.print(f"{answer!r} is neither a number nor one of {', '.join(CLASSES)}", highlight=False)
            continue
        if number == number and abs(number) != float("inf"):
            return number, None
        console.print(f"{answer!r} is not a finite number", highlight=False)
