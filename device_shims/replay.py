"""Replay a recorded CSV or Parquet file through the gateway path, driven by a mapping file.

    python -m edgeloop.device_shims.replay --mapping M.yaml --gateway-config G.json FILE

Every sample takes the road a live one takes: SampleValidator -> durable SampleBuffer -> Publisher
-> MQTT5 with mutual TLS, so a user's own recording reaches the cloud without code changes, and its
bad readings are refused with the same counted reasons.

The mapping (YAML, `ReplayMapping`, described with an example in replay_mapping.py) says how to
read the file; recording.py reads it.

Wide files: an empty cell is no reading. Long files (`long: {metric_column, value_column, metrics}`):
`metrics` renames metric keys; unmapped keys are sent as they are (the validator counts unknown
ones), and an empty value is a bad reading. A timestamp that does not parse is a bad time: the
buffer counts those samples and a WARNING names the first bad value.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from edgeloop.greengrass_components.gateway.buffer import SampleBuffer
from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.greengrass_components.gateway.publisher import Publisher
from edgeloop.greengrass_components.gateway.transport import Transport
from edgeloop.greengrass_components.gateway.validation import SampleValidator, append_validated, merge_counts
from edgeloop.schemas import UseCaseConfig, load_use_case
from edgeloop.schemas.common import validation_problems

from .recording import Column, cell_values, parse_times, read_columns
from .replay_mapping import MAPPING_ROOT, ReplayMapping, resolve_metric

log = logging.getLogger("edgeloop.replay")

DEFAULT_CHUNK_SAMPLES = 5000
DEFAULT_DRAIN_TIMEOUT_S = 60.0

Sample = tuple[str, Any, Any]
Row = tuple[int | None, list[Sample]]  # (time_ms or None when it did not parse, the row's samples)
Clock = Callable[[], float]
Sleep = Callable[[float], None]


# --- turning a recording into samples ------------------------------------------------------------
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
    elapsed_s: float = 0.0

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
        line = gateway.line_id
        self.column_metrics = {
            c: resolve_metric(e, self.use_case, line, f"columns.{c}") for c, e in mapping.columns.items()
        }
        self.key_metrics = (
            {k: resolve_metric(e, self.use_case, line, f"long.metrics.{k}") for k, e in mapping.long.metrics.items()}
            if mapping.long
            else {}
        )

    # --- rows --------------------------------------------------------------------------------------
    def rows(self, path: Path, report: ReplayReport | None = None) -> Iterator[Row]:
        """The file's rows as (time_ms, samples), in file order."""
        ts = self.mapping.timestamp
        if self.mapping.layout == "wide":
            wanted = [ts.column, *self.column_metrics]
        else:
            wanted = [ts.column, self.mapping.long.metric_column, self.mapping.long.value_column]
        columns = read_columns(path, wanted)
        times, valid = parse_times(columns[ts.column], ts, ts.column)
        self._report_bad_times(path, columns[ts.column], valid, report)
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
        """Validator -> buffer -> publisher over `transport` (default: MQTT5 from the gateway config)."""
        gw = self.gateway
        if transport is None:
            transport = self._mqtt_transport()
        stop = stop or threading.Event()
        report = ReplayReport(file=str(path))
        started = time.monotonic()
        validator = SampleValidator(self.use_case, source=gw.thing_name)
        with gw.open_buffer() as buffer:
            publisher = Publisher(buffer, transport, gw.telemetry_topic, max_backoff_s=2.0)
            publishing = threading.Event()
            thread = threading.Thread(
                target=publisher.run, args=(publishing,), name=f"{gw.thing_name}-replay-publisher", daemon=True
            )
            thread.start()
            try:
                self._feed(path, validator, buffer, report, stop)
                _wait_for_drain(buffer, drain_timeout_s, stop)
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

    def _feed(
        self, path: Path, validator: SampleValidator, buffer: SampleBuffer, report: ReplayReport, stop: threading.Event
    ) -> None:
        def counted(rows: Iterable[Row]) -> Iterator[Row]:
            for row in rows:
                report.rows += 1
                yield row

        for chunk in self.chunks(counted(self.rows(path, report))):
            if stop.is_set():
                break
            result = append_validated(validator, buffer, chunk)
            report.samples_offered += result.offered
            report.accepted += result.accepted
            report.rejected = merge_counts(report.rejected, result.rejected)
            report.dropped += result.dropped

    def _mqtt_transport(self) -> Transport:
        gw = self.gateway
        if gw.transport != "mqtt":
            raise ValueError(
                f"gateway transport={gw.transport!r}: replay talks MQTT only ('mqtt'); "
                "inside Greengrass, publish to the gateway component's local topic instead"
            )
        return gw.mqtt_transport()


def paced_chunks(
    rows: Iterable[Row], speed: float, clock: Clock, sleep: Sleep, max_samples: int
) -> Iterator[list[Sample]]:
    """Group rows into chunks of at most ~max_samples; with speed > 0, release each row no earlier than
    start + (its time - the first time) / speed on `clock`. Rows out of time order (or without a time)
    go with the rows around them: their due time has passed."""
    pending: list[Sample] = []
    first_ms: int | None = None
    start = clock()
    for time_ms, samples in rows:
        if speed > 0 and time_ms is not None:
            if first_ms is None:
                first_ms = time_ms
            due = start + (time_ms - first_ms) / 1000.0 / speed
            if due > clock():
                if pending:
                    yield pending
                    pending = []
                wait = due - clock()
                if wait > 0:
                    sleep(wait)
        pending.extend(samples)
        if len(pending) >= max_samples:
            yield pending
            pending = []
    if pending:
        yield pending


def _wait_for_drain(buffer: SampleBuffer, timeout_s: float, stop: threading.Event) -> None:
    deadline = time.monotonic() + timeout_s
    while buffer.pending_samples() and time.monotonic() < deadline and not stop.is_set():
        stop.wait(0.05)


# --- entry points --------------------------------------------------------------------------------
def replay_file(
    file: Path,
    mapping_path: Path,
    gateway_config_path: Path,
    *,
    speed: float | None = None,
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
    stop: threading.Event | None = None,
) -> ReplayReport:
    """Load mapping and gateway config, replay `file`; what `edgeloop gateway replay` and `-m` call."""
    mapping = ReplayMapping.from_file(mapping_path)
    if speed is not None:
        try:
            mapping = ReplayMapping.model_validate({**mapping.model_dump(), "speed": speed})
        except ValidationError as exc:
            raise ValueError(f"--speed: {validation_problems(exc, root=MAPPING_ROOT)}") from None
    gateway = GatewayConfig.from_file(gateway_config_path)
    return Replay(mapping, gateway).run(Path(file), drain_timeout_s=drain_timeout_s, stop=stop)


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
    parser.add_argument(
        "--drain-timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT_S, help="seconds to wait for the broker at the end"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        report = replay_file(
            args.file, args.mapping, args.gateway_config, speed=args.speed, drain_timeout_s=args.drain_timeout
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.pending == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
