"""`edgeloop monitor [--line L]`: how the deployed models do in the field, per line (issue 17).

Three tables (edgeloop/monitor_view.py reads them; the demo report too):
- live accuracy per line and model version, newest scored window: the model's RMSE beside
  persistence's (the value at made_at) and the registration figure, the ratios the alarm judges,
  violation precision/recall, lead time, and the degraded streak;
- recent alerts with their lead time: raise and clear paired by alert_id, open ones marked;
- retraining: what the retraining function would do now for each line (start, and why; or why not).

Against the cloud: the stack's bucket and monitoring table (EDGELOOP_DATA_BUCKET, EDGELOOP_MONITORING_TABLE)
and use case (EDGELOOP_USE_CASE). Against a running `edgeloop local up`: `--dir` reads its local.env
(or `source` it first).
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from edgeloop.cli.use_case import cli_use_case, use_case_file_option, use_case_option
from edgeloop.schemas import names
from edgeloop.schemas.training import ViolationClass

# Piped output (logs, grep) would otherwise wrap the tables at 80 columns.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
errors = Console(stderr=True, soft_wrap=True)


def monitor_command(
    line: list[str] = typer.Option(None, "--line", help="a line id (repeat for more); default: every monitored line"),
    days: int = typer.Option(7, "--days", min=1, max=90, help="alerts of the last N event days"),
    alerts: int = typer.Option(20, "--alerts", min=1, help="newest N alerts per line"),
    windows: int = typer.Option(24, "--windows", min=1, help="live-accuracy window reports read per line"),
    bucket: str = typer.Option(names.LOCAL_DATA_BUCKET, "--bucket", envvar=names.DATA_BUCKET_ENV),
    monitoring_table: str = typer.Option(
        names.LOCAL_MONITORING_TABLE, "--monitoring-table", envvar=names.MONITORING_TABLE_ENV
    ),
    local_dir: Path = typer.Option(None, "--dir", help="the folder of a running `edgeloop local up` (its local.env)"),
    use_case: str = use_case_option(),
    use_case_file: Path = use_case_file_option(),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
) -> None:
    """Live accuracy per line and model version, recent alerts with lead time, the retraining triggers."""
    from edgeloop.monitor_view import read_monitoring

    try:
        stack = _local_stack(local_dir)
    except (ValueError, FileNotFoundError) as exc:
        errors.print(f"monitor: {exc}", markup=False)
        raise typer.Exit(code=2) from None
    with stack:
        config = cli_use_case(use_case, use_case_file)
        now = datetime.now(UTC)
        try:
            found = read_monitoring(
                bucket,
                config,
                now=now,
                lines=line or None,
                alert_days=days,
                windows=windows,
                monitoring_table=monitoring_table,
            )
        except Exception as exc:  # an unreachable endpoint, a missing bucket or table: say which
            errors.print(f"monitor: {type(exc).__name__}: {exc}", markup=False)
            raise typer.Exit(code=1) from None
    if as_json:  # print(), not rich: machines read this, and rich would wrap and highlight it
        print(json.dumps(found.document(alerts), indent=2))
        return
    if not found.lines:
        console.print(f"no line has landed alerts or live-accuracy records in s3://{bucket}")
    console.print(accuracy_table(found.lines, config.monitoring.degraded_windows))
    for monitored in found.lines:
        console.print(alerts_table(monitored, alerts, now))
    console.print(triggers_table(found.decisions))
    if found.executions_note:
        console.print(found.executions_note, markup=False)


def _local_stack(local_dir: Path | None):
    if local_dir is None:
        return nullcontext()
    from edgeloop.local.gateways import running_stack_environment, using_stack

    return using_stack(running_stack_environment(local_dir.resolve()))


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def accuracy_table(lines, degraded_windows: int) -> Table:
    """Per line and model version, its newest window with joined predictions."""
    table = Table(title="Live accuracy (newest scored window per model version)")
    for column in (
        "line",
        "model",
        "window (UTC)",
        "joined",
        "RMSE (persistence)",
        "vs persistence",
        "vs registration (RMSE)",
        "precision / recall",
        "lead time",
        "degraded streak",
    ):
        table.add_column(column)
    for monitored in lines:
        streaks = {(s.model_id, s.version): s for s in (monitored.state.streaks if monitored.state else [])}
        windows = monitored.latest_by_version()
        if not windows:
            scored = f"scored through {_time(monitored.state.scored_through)}" if monitored.state else "not scored yet"
            table.add_row(monitored.line_id, "-", scored, *["-"] * 7)
        for w in windows:
            model, persistence = w.model, w.persistence
            streak = streaks.get((w.model_id, w.version))
            tripped = " (tripped)" if streak and streak.tripped else ""
            table.add_row(
                w.line_id,
                f"{w.model_id} {w.version}",
                f"{w.window_start.astimezone(UTC):%Y-%m-%d %H:%M}-{w.window_end.astimezone(UTC):%H:%M}",
                f"{w.joined}/{w.predictions}" + ("" if w.judged else " (not judged)"),
                f"{_number(model.rmse if model else None)} ({_number(persistence.rmse if persistence else None)})",
                _styled_ratio(w.rmse_ratio_vs_persistence, w.degraded),
                _styled_ratio(w.rmse_ratio_vs_registration, w.degraded)
                + (f" ({w.registered_rmse:.4f})" if w.registered_rmse is not None else ""),
                f"{_number(model.violation_precision if model else None, 2)} / "
                f"{_number(model.violation_recall if model else None, 2)}",
                _seconds(model.lead_time_median_s if model else None),
                f"{len(streak.windows) if streak else 0}/{degraded_windows}{tripped}",
            )
    return table


def _styled_ratio(value: float | None, degraded: bool) -> str:
    text = _number(value, 2)
    return f"[red]{text}[/]" if degraded and value is not None else text


def alerts_table(monitored, limit: int, now: datetime) -> Table:
    """The line's newest alerts: class, when raised, lead time, when cleared (or open for how long)."""
    episodes = monitored.alerts[:limit]
    table = Table(title=f"Alerts on {monitored.line_id} ({len(episodes)} of {len(monitored.alerts)})")
    for column in ("alert", "gateway", "class", "raised (UTC)", "lead time", "predicted (limit)", "cleared (UTC)"):
        table.add_column(column)
    for episode in episodes:
        raised = episode.raised
        if episode.open:
            cleared = f"[red]open[/] for {_seconds((now - episode.raised_at).total_seconds())}"
        else:
            cleared = f"{_time(episode.cleared.at)} (after {_seconds((episode.cleared.at - episode.raised_at).total_seconds())})"
        table.add_row(
            episode.alert_id,
            episode.thing_name,
            episode.violation_class,
            _time(episode.raised_at),
            _seconds(episode.lead_time_s),
            _level(raised),
            cleared,
        )
    return table


def _level(raised) -> str:
    """The raising prediction's level beside the limit it crossed."""
    if raised is None:
        return "-"
    if raised.violation_class is ViolationClass.USL:
        return f"{raised.predicted_level:.4f} (> {raised.spec.upper:g})"
    return f"{raised.predicted_level:.4f} (< {raised.spec.lower:g})"


def triggers_table(decisions) -> Table:
    table = Table(title="Retraining: what would fire now")
    for column in ("line", "would start", "trigger", "why", "next scheduled (UTC)"):
        table.add_column(column)
    for d in decisions:
        table.add_row(
            d.line_id,
            "[green]yes[/]" if d.start else "no",
            d.trigger.kind.value if d.trigger else "-",
            d.why,
            _time(d.next_scheduled_at),
        )
    return table
