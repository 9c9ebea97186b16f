"""Replay a recorded CSV or Parquet file through the gateway path, driven by a mapping file.

    python -m edgeloop.device_shims.replay --mapping M.yaml --gateway-config G.json FILE

Every sample takes the road a live one takes: SampleValidator -> durable SampleBuffer -> Publisher
-> MQTT5 with mutual TLS, so a user's own recording reaches the cloud without code changes, and its
bad readings are refused with the same counted reasons.

The mapping (YAML, `ReplayMapping`, described with an example in replay_mapping.py) says how to
read the file; recording.py reads it.

Before anything is buffered or published, the whole file is checked: a timestamp format that fails
most rows, rows older than ingest's lateness SLA (lateness.py; those go through `edgeloop backfill`),
and the mapping's `context:` block (recording_context.py) all refuse the replay with the key, the
value and the file. The context intervals (runs, states, spec limits) are then published on the
gateway's context topic in bounded batches, before the samples (replay_pacing.py: when each
message and each chunk of samples goes out).

Wide files: an empty cell is no reading. Long files (`long: {metric_column, value_column, metrics}`):
`metrics` renames metric keys; unmapped keys are sent as they are (the validator counts unknown
ones), and an empty value is a bad reading. A timestamp that does not parse is a bad time: the
buffer counts those samples and a WARNING names the first bad value.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from edgeloop.greengrass_components.gateway.buffer import SampleBuffer
from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.greengrass_components.gateway.publisher import Publisher
from edgeloop.greengrass_components.gateway.transport import Transport
from edgeloop.greengrass_components.gateway.validation import SampleValidator, append_validated, merge_counts
from edgeloop.schemas import ContextInterval, UseCaseConfig, load_use_case, names, resolve_use_case
from edgeloop.schemas.common import validation_problems

from .context_publishing import context_messages, summary
from .lateness import backfill_command, check_lateness, lateness_sla_days
from .recording import Column, cell_values, parse_times, read_columns
from .recording_context import check_timestamps, context_columns, context_intervals, context_settings, target_column
from .replay_mapping import MAPPING_ROOT, ReplayMapping, resolve_metric
from .replay_pacing import Clock, Row, Sample, Sleep, paced_chunks, publish_context, wait_for_drain

log = logging.getLogger("edgeloop.replay")

DEFAULT_CHUNK_SAMPLES = 5000
DEFAULT_DRAIN_TIMEOUT_S = 60.0
SHIFT_TO_NOW_HELP = (
    "move the recording's timeline so its last row is now (to try the live path with an old recording; "
    "history itself goes through `edgeloop backfill`)"
)


# --- turning a recording into samples ------------------------------------------------------------
@dataclass(frozen=True)
class Recording:
    """A file's columns as the mapping reads them, with its timestamps (epoch ms) and their validity."""

    path: Path
    columns: dict[str, Column]
    time_ms: np.ndarray
    valid: np.ndarray
    shift_ms: int = 0

    def shifted_to(self, now_ms: int) -> Recording:
        """The same rows, moved by whole seconds so that the latest one is at `now_ms`."""
        if not self.valid.any():
            return self
        shift = (now_ms - int(self.time_ms[self.valid].max())) // 1000 * 1000
        return replace(self, time_ms=np.where(self.valid, self.time_ms + shift, self.time_ms), shift_ms=shift)


@dataclass
class ReplayReport:
    file: str
    rows: int = 0
    bad_time_rows: int = 0
    samples_offered: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    published_samples: int = 0
    pending: int = 0
    time_shift_ms: int = 0  # --shift-to-now: added to every timestamp
    context: dict[str, int] = field(default_factory=dict)  # context intervals derived, per kind
    context_published: int = 0  # context intervals the broker acknowledged
    context_error: str = ""
    elapsed_s: float = 0.0

    @property
    def context_pending(self) -> int:
        return sum(self.context.values()) - self.context_published

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Replay:
    """One recording through one gateway: mapping + gateway config -> rows of samples -> the gateway path."""

    def __init__(
        self,
        mapping: ReplayMapping,
        gateway: GatewayConfig,
        *,
        use_case: UseCaseConfig | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
        wall_clock: Clock = time.time,
        lateness_sla_days: int | None = None,
        shift_to_now: bool = False,
        mapping_path: Path | None = None,
    ) -> None:
        if mapping.thing_name is not None and mapping.thing_name != gateway.thing_name:
            raise ValueError(
                f"mapping thing_name={mapping.thing_name!r} differs from the gateway config's "
                f"{gateway.thing_name!r}: a gateway publishes only as itself"
            )
        if chunk_samples < 1:
            raise ValueError(f"chunk_samples={chunk_samples} must be >= 1")
        if mapping.line_id is not None:
            gateway = gateway.model_copy(update={"line_id": mapping.line_id})
        self.mapping = mapping
        self.gateway = gateway
        self.use_case = use_case or load_use_case(gateway.use_case)
        self.clock = clock
        self.sleep = sleep
        self.chunk_samples = chunk_samples
        self.wall_clock = wall_clock
        self.lateness_sla_days = lateness_sla_days
        self.shift_to_now = shift_to_now
        self.mapping_path = mapping_path  # where the mapping came from, for the messages
        line = gateway.line_id
        self.column_metrics = {
            c: resolve_metric(e, self.use_case, line, f"columns.{c}") for c, e in mapping.columns.items()
        }
        self.key_metrics = (
            {k: resolve_metric(e, self.use_case, line, f"long.metrics.{k}") for k, e in mapping.long.metrics.items()}
            if mapping.long
            else {}
        )
        self.target_column = target_column(mapping, self.use_case, line) if mapping.context else None

    # --- reading and checking ----------------------------------------------------------------------
    def load(self, path: Path, report: ReplayReport | None = None) -> Recording:
        """The columns the mapping reads, with the parsed timestamps."""
        ts = self.mapping.timestamp
        if self.mapping.layout == "wide":
            wanted = [ts.column, *self.column_metrics, *context_columns(self.mapping, self.target_column)]
        else:
            wanted = [ts.column, self.mapping.long.metric_column, self.mapping.long.value_column]
        columns = read_columns(path, wanted, context_settings(self.mapping))
        times, valid = parse_times(columns[ts.column], ts, ts.column)
        self._report_bad_times(path, columns[ts.column], valid, report)
        return Recording(Path(path), columns, times, valid)

    def check(self, recording: Recording) -> list[ContextInterval]:
        """Refuse what cannot go through the gateway path (ValueError naming key, value and file);
        the recording's context intervals otherwise. Runs before anything is buffered or published."""
        ts = self.mapping.timestamp
        source = str(recording.path)
        check_timestamps(recording.columns[ts.column].values, recording.valid, self.mapping, source=source)
        intervals = []
        if self.mapping.context is not None:  # mapping mistakes first: backfill reads the same mapping
            frame = pd.DataFrame({name: c.values for name, c in recording.columns.items() if name != ts.column})
            line = self.gateway.line_id
            intervals = context_intervals(
                frame, recording.time_ms, recording.valid, self.mapping, line, self.use_case, source=source
            )
        sla_days = self.lateness_sla_days if self.lateness_sla_days is not None else lateness_sla_days()
        now_ms = int(self.wall_clock() * 1000)
        gw = self.gateway
        backfill = backfill_command([source], self.mapping_path, gw.line_id, gw.thing_name)
        check_lateness(
            recording.time_ms, recording.valid, now_ms=now_ms, sla_days=sla_days, source=source, backfill=backfill
        )
        return intervals

    # --- rows --------------------------------------------------------------------------------------
    def rows(self, path: Path, report: ReplayReport | None = None) -> Iterator[Row]:
        """The file's rows as (time_ms, samples), in file order."""
        yield from self.recording_rows(self.load(path, report))

    def recording_rows(self, recording: Recording) -> Iterator[Row]:
        times, valid, columns = recording.time_ms, recording.valid, recording.columns
        time_of = [int(t) if ok else None for t, ok in zip(times.tolist(), valid.tolist(), strict=True)]
        if self.mapping.layout == "wide":
            yield from self._wide_rows(columns, time_of)
        else:
            yield from self._long_rows(columns, time_of)

    def _wide_rows(self, columns: dict[str, Column], time_of: list[int | None]) -> Iterator[Row]:
        series = [
            (metric, cell_values(columns[c]), columns[c].missing.tolist()) for c, metric in self.column_metrics.items()
        ]
        for i, time_ms in enumerate(time_of):
            yield time_ms, [(metric, time_ms, values[i]) for metric, values, missing in series if not missing[i]]

    def _long_rows(self, columns: dict[str, Column], time_of: list[int | None]) -> Iterator[Row]:
        layout = self.mapping.long
        keys = columns[layout.metric_column]
        key_text = ["" if gap else str(k) for k, gap in zip(keys.values.tolist(), keys.missing.tolist(), strict=True)]
        value_column = columns[layout.value_column]
        values = [
            None if gap else v for v, gap in zip(cell_values(value_column), value_column.missing.tolist(), strict=True)
        ]
        for key, time_ms, value in zip(key_text, time_of, values, strict=True):
            yield time_ms, [(self.key_metrics.get(key, key), time_ms, value)]

    def _report_bad_times(self, path: Path, column: Column, valid: np.ndarray, report: ReplayReport | None) -> None:
        bad = np.flatnonzero(~valid)
        if report is not None:
            report.bad_time_rows = len(bad)
        if len(bad):
            ts = self.mapping.timestamp
            first = bad[0]
            raw = "" if column.missing[first] else column.values.iloc[first]
            log.warning(
                "%s: %d rows have no usable timestamp (timestamp.column=%r, format=%r, timezone=%r); "
                "first: row %d value %r; their samples are refused as bad_time",
                path,
                len(bad),
                ts.column,
                ts.format,
                ts.timezone,
                first + 1,
                raw,
            )

    # --- pacing ------------------------------------------------------------------------------------
    def chunks(self, rows: Iterable[Row]) -> Iterator[list[Sample]]:
        """Samples in appendable chunks, released on the recording's timeline at `speed`."""
        return paced_chunks(rows, self.mapping.speed, self.clock, self.sleep, self.chunk_samples)

    # --- the gateway path --------------------------------------------------------------------------
    def run(
        self,
        path: Path,
        *,
        transport: Transport | None = None,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
        stop: threading.Event | None = None,
    ) -> ReplayReport:
        """Check the file, publish its context, then validator -> buffer -> publisher over `transport`
        (default: MQTT5 from the gateway config)."""
        gw = self.gateway
        started = time.monotonic()
        if transport is None:
            self._check_mqtt()
        report = ReplayReport(file=str(path))
        recording = self.load(Path(path), report)
        if self.shift_to_now:
            recording = recording.shifted_to(int(self.wall_clock() * 1000))
            report.time_shift_ms = recording.shift_ms
        intervals = self.check(recording)
        report.context = summary(intervals)
        if transport is None:
            transport = self._mqtt_transport()
        stop = stop or threading.Event()
        validator = SampleValidator(self.use_case, source=gw.thing_name)
        if intervals:
            self._publish_context(transport, intervals, report, time.monotonic() + drain_timeout_s, stop)
        with gw.open_buffer() as buffer:
            publisher = Publisher(buffer, transport, gw.telemetry_topic, max_backoff_s=2.0)
            publishing = threading.Event()
            thread = threading.Thread(
                target=publisher.run, args=(publishing,), name=f"{gw.thing_name}-replay-publisher", daemon=True
            )
            thread.start()
            try:
                self._feed(recording, validator, buffer, report, stop)
                wait_for_drain(buffer, drain_timeout_s, stop)
            finally:
                publishing.set()
                thread.join(timeout=30)
                transport.disconnect()
                report.published_samples = publisher.published_samples
                report.pending = buffer.pending_samples()
                if report.pending:
                    log.warning(
                        "%d samples are still buffered in %s (%s); the next run sends them",
                        report.pending,
                        gw.buffer_path,
                        publisher.last_error or "drain timeout",
                    )
        report.elapsed_s = round(time.monotonic() - started, 3)
        return report

    def _publish_context(
        self,
        transport: Transport,
        intervals: list[ContextInterval],
        report: ReplayReport,
        deadline: float,
        stop: threading.Event,
    ) -> None:
        """The intervals in bounded JSON lists on the context topic (publish_context); those not
        acknowledged by `deadline` (time.monotonic()) are reported as not published."""
        topic = names.context_topic(self.gateway.thing_name)
        messages = context_messages(intervals)
        published, report.context_error = publish_context(transport, topic, messages, deadline, stop, self.sleep)
        report.context_published += published
        if report.context_error:
            log.warning(
                "%d context intervals were not published on %s (%s); replay the file again to send them",
                report.context_pending,
                topic,
                report.context_error,
            )
        else:
            log.info("published %d context intervals on %s: %s", report.context_published, topic, report.context)

    def _feed(
        self,
        recording: Recording,
        validator: SampleValidator,
        buffer: SampleBuffer,
        report: ReplayReport,
        stop: threading.Event,
    ) -> None:
        def counted(rows: Iterable[Row]) -> Iterator[Row]:
            for row in rows:
                report.rows += 1
                yield row

        for chunk in self.chunks(counted(self.recording_rows(recording))):
            if stop.is_set():
                break
            result = append_validated(validator, buffer, chunk)
            report.samples_offered += result.offered
            report.accepted += result.accepted
            report.rejected = merge_counts(report.rejected, result.rejected)
            report.dropped += result.dropped

    def _check_mqtt(self) -> None:
        gw = self.gateway
        if gw.transport != "mqtt":
            raise ValueError(
                f"gateway transport={gw.transport!r}: replay talks MQTT only ('mqtt'); "
                "inside Greengrass, publish to the gateway component's local topic instead"
            )

    def _mqtt_transport(self) -> Transport:
        self._check_mqtt()
        return self.gateway.mqtt_transport()


# --- entry points --------------------------------------------------------------------------------
def replay_file(
    file: Path,
    mapping_path: Path,
    gateway_config_path: Path,
    *,
    speed: float | None = None,
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    stop: threading.Event | None = None,
    shift_to_now: bool = False,
    use_case_file: Path | None = None,
) -> ReplayReport:
    """Load mapping and gateway config, replay `file`; what `edgeloop gateway replay` and `-m` call.

    The use case is the gateway's (its config names it), read from `use_case_file` or the
    environment's use-case file (`edgeloop local up` exports it) when one is given: a user's own use
    case is not packaged, and the file must name the gateway's use case."""
    mapping = ReplayMapping.from_file(mapping_path)
    if speed is not None:
        try:
            mapping = ReplayMapping.model_validate({**mapping.model_dump(), "speed": speed})
        except ValidationError as exc:
            raise ValueError(f"--speed: {validation_problems(exc, root=MAPPING_ROOT)}") from None
    gateway = GatewayConfig.from_file(gateway_config_path)
    use_case_file = use_case_file or os.environ.get(names.USE_CASE_FILE_ENV) or None
    use_case = resolve_use_case(
        gateway.use_case, use_case_file, name_source=f"{gateway_config_path}: use_case", file_source="use-case file"
    )
    replay = Replay(mapping, gateway, use_case=use_case, shift_to_now=shift_to_now, mapping_path=Path(mapping_path))
    return replay.run(Path(file), drain_timeout_s=drain_timeout_s, stop=stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeloop.device_shims.replay", description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path, help="recorded CSV or Parquet file")
    parser.add_argument("--mapping", type=Path, required=True, help="replay mapping (YAML)")
    parser.add_argument(
        "--gateway-config", type=Path, required=True, help="GatewayConfig JSON (identity, broker, certs, buffer)"
    )
    parser.add_argument(
        "--speed", type=float, default=None, help="override the mapping's playback speed (0 = as fast as possible)"
    )
    parser.add_argument("--shift-to-now", action="store_true", help=SHIFT_TO_NOW_HELP)
    parser.add_argument(
        "--use-case-file",
        type=Path,
        default=None,
        help=f"the gateway's use case as a file (default: ${names.USE_CASE_FILE_ENV})",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT_S, help="seconds to wait for the broker at the end"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        report = replay_file(
            args.file,
            args.mapping,
            args.gateway_config,
            speed=args.speed,
            drain_timeout_s=args.drain_timeout,
            shift_to_now=args.shift_to_now,
            use_case_file=args.use_case_file,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.pending == 0 and report.context_pending == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
