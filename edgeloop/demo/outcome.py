"""What a demo run found: the figures `make demo` prints and the report draws, and how to wait for them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from edgeloop.schemas import DeviceRecord, DeviceStatus, ModelMetrics

if TYPE_CHECKING:
    from edgeloop.demo.gate import LineEvaluation
    from edgeloop.monitor_view import AlertEpisode
    from edgeloop.schemas.monitoring import LiveAccuracyWindow


class DemoFailed(RuntimeError):
    """A stage did not reach its goal in time; the message says which and why."""


@dataclass
class LineModel:
    line_id: str
    model_package_arn: str
    metrics: ModelMetrics
    n_examples: int
    approval_status: str = ""
    registry_metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class DemoOutcome:
    samples_sent: int = 0
    samples_landed: int = 0
    samples_quarantined: int = 0
    handler_failures: int = 0
    live_points: dict[str, int] = field(default_factory=dict)  # per line: predictions with a measurement
    live_mae: dict[str, float] = field(default_factory=dict)  # per line: mean |predicted - measured|
    models: dict[str, LineModel] = field(default_factory=dict)  # the registered lines only (they passed the gate)
    # every line: its candidate and the baselines on the reference run(s), and the gate's decision
    evaluations: dict[str, LineEvaluation] = field(default_factory=dict)
    rolled_out_things: set[str] = field(default_factory=set)  # the gateways of the registered lines
    fleet: list[DeviceRecord] = field(default_factory=list)
    model_version: str = ""
    report_path: Path | None = None
    # rollups and context slices after the last compaction
    rollup_rows: dict[str, int] = field(default_factory=dict)  # resolution -> rows over every line
    rollup_samples_1h: dict[str, int] = field(default_factory=dict)  # per line: sum of the 1h counts
    curated_samples: dict[str, int] = field(default_factory=dict)  # per line: curated rows
    late_samples: dict[str, int] = field(default_factory=dict)  # per line: rows beyond the lateness SLA
    context_slices: dict[str, int] = field(default_factory=dict)  # per line: 1-minute context slices
    # the query layer on the demo's data: per line, hourly die temperature (°C) rows and their mean
    role_query_rows: dict[str, int] = field(default_factory=dict)
    role_query_mean: dict[str, float] = field(default_factory=dict)
    # issue 17: the gateways' violation alerts as landed (raise and clear paired, newest first) and the
    # live-accuracy function's windows (model vs persistence per model version), per line
    alerts: dict[str, list[AlertEpisode]] = field(default_factory=dict)
    live_accuracy: dict[str, list[LiveAccuracyWindow]] = field(default_factory=dict)
    predictions_landed: dict[str, int] = field(default_factory=dict)  # per line: PredictionMessages in S3
    last_prediction_at: dict[str, datetime] = field(default_factory=dict)  # per line: the newest made_at

    @property
    def every_gateway_on_new_model(self) -> bool:
        """Every gateway of a registered line runs the new model; a refused line's gateways do not."""
        on_new = {
            d.thing_name
            for d in self.fleet
            if d.status is DeviceStatus.APPLIED and d.current_model_version == self.model_version
        }
        return bool(self.rolled_out_things) and on_new == self.rolled_out_things

    @property
    def registered_only_if_passed(self) -> bool:
        return all(line in self.evaluations and self.evaluations[line].passed for line in self.models)

    @property
    def ok(self) -> bool:
        return (
            self.samples_sent == self.samples_landed
            and self.handler_failures == 0
            and self.every_gateway_on_new_model
            and self.registered_only_if_passed
        )

    def rollups_line(self) -> str:
        rows = ", ".join(f"{resolution} {count:,}" for resolution, count in self.rollup_rows.items())
        slices = sum(self.context_slices.values())
        return f"[green]rollups[/] rows per resolution: {rows}  [green]context slices[/] {slices:,} one-minute slices"

    def monitoring_line(self) -> str:
        """Predictions and alerts landed, and live accuracy's windows, over every line."""
        episodes = [e for line in self.alerts.values() for e in line]
        leads = sorted(e.lead_time_s for e in episodes if e.lead_time_s is not None)
        lead = f", median lead time {leads[len(leads) // 2]:.0f} s" if leads else ""
        windows = sum(len(w) for w in self.live_accuracy.values())
        return (
            f"[green]predictions[/] {sum(self.predictions_landed.values()):,} landed  [green]alerts[/] "
            f"{len(episodes)} ({sum(e.open for e in episodes)} open{lead})  [green]live accuracy[/] "
            f"{windows} window(s) scored"
        )

    def role_query_line(self) -> str:
        means = ", ".join(
            f"{line} {self.role_query_mean[line]:.1f} °C over {rows} h" for line, rows in self.role_query_rows.items()
        )
        return f"[green]query layer[/] (DuckDB, rollups_by_role die_temperature at 1h): {means}"


def wait_until(what: str, done: Callable[[], bool], timeout_s: float, poll_s: float = 0.25) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def progress_bars(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TimeElapsedColumn(),
        console=console,
    )
