"""Replay a recorded CSV or Parquet file through the gateway path, driven by a mapping file.

    python -m edgeloop.device_shims.replay --mapping M.yaml --gateway-config G.json FILE

Every sample takes the road a live one takes: SampleValidator -> durable SampleBuffer -> Publisher
-> MQTT5 with mutual TLS, so a user's own recording reaches the cloud without code changes, and its
bad readings are refused with the same counted reasons.

The mapping (YAML, `ReplayMapping`) says how to read the file:

    layout: wide                    # one column per metric; or `long` (metric, time, value columns)
    timestamp:
      column: time
      format: "%Y-%m-%d %H:%M:%S"   # epoch_s | epoch_ms | iso8601 | a strftime format
      timezone: Europe/Brussels     # for values without a UTC offset (default UTC)
    columns:                        # wide: file column -> metric (a string) or {metric, role}
      line_speed: speed
      die_temp: {role: die_temperature}   # the use case's key for that role on the line
    speed: 0                        # 0 = as fast as possible, 1 = real time, N = N x real time
    line_id: line-1                 # optional: the recording's line (default: the gateway's)
    thing_name: gw-1                # optional: must be the gateway's own thing

Wide files: an empty cell is no reading. Long files (`long: {metric_column, value_column, metrics}`):
`metrics` renames metric keys; unmapped keys are sent as they are (the validator counts unknown
ones), and an empty value is a bad reading. A timestamp that does not parse is a bad time: the
buffer counts those samples and a WARNING names the first bad value.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeloop.greengrass_components.gateway.buffer import SampleBuffer
from edgeloop.greengrass_components.gateway.config import GatewayConfig
from edgeloop.greengrass_components.gateway.publisher import Publisher
from edgeloop.greengrass_components.gateway.transport import Mqtt5Transport, Transport
from edgeloop.greengrass_components.gateway.validation import SampleValidator, append_validated, merge_counts
from edgeloop.schemas import UseCaseConfig, load_use_case
from edgeloop.schemas.common import Identifier, ThingName

log = logging.getLogger("edgeloop.replay")

EPOCH_S = "epoch_s"
EPOCH_MS = "epoch_ms"
ISO8601 = "iso8601"
NAMED_TIME_FORMATS = (EPOCH_S, EPOCH_MS, ISO8601)
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
DEFAULT_CHUNK_SAMPLES = 5000
DEFAULT_DRAIN_TIMEOUT_S = 60.0
_UTC_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})$"

Sample = tuple[str, Any, Any]
Row = tuple[int | None, list[Sample]]  # (time_ms or None when it did not parse, the row's samples)
Clock = Callable[[], float]
Sleep = Callable[[float], None]


# --- the mapping file ----------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeriesMapping(_Strict):
    """Where one series goes: a metric key, a taxonomy role (the use case picks the key), or both."""

    metric: str | None = Field(default=None, min_length=1)
    role: Identifier | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"metric": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _something(self) -> SeriesMapping:
        if self.metric is None and self.role is None:
            raise ValueError("needs a metric, a role, or both")
        return self


class TimestampMapping(_Strict):
    column: str = Field(min_length=1)
    format: str = Field(default=EPOCH_MS, description="epoch_s, epoch_ms, iso8601 or a strftime format")
    timezone: str = Field(default="UTC", description="zone of values without a UTC offset")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in NAMED_TIME_FORMATS and not re.search(r"%[a-zA-Z]", value):
            raise ValueError(
                f"format={value!r} is none of {list(NAMED_TIME_FORMATS)} and has no strftime directive (%Y, %m, ...)"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone={value!r} is not an IANA time zone (e.g. UTC, Europe/Brussels)") from None
        return value


class LongLayout(_Strict):
    metric_column: str = Field(min_length=1)
    value_column: str = Field(min_length=1)
    metrics: dict[str, SeriesMapping] = Field(default_factory=dict, description="metric key in the file -> metric")


class ReplayMapping(_Strict):
    layout: Literal["wide", "long"] = "wide"
    timestamp: TimestampMapping
    columns: dict[str, SeriesMapping] = Field(default_factory=dict, description="wide: file column -> metric")
    long: LongLayout | None = None
    speed: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="0 = as fast as possible, N = N x real time"
    )
    line_id: Identifier | None = None
    thing_name: ThingName | None = None

    @model_validator(mode="after")
    def _layout_complete(self) -> ReplayMapping:
        if self.layout == "wide":
            if not self.columns:
                raise ValueError("layout='wide' needs `columns` (file column -> metric)")
            if self.long is not None:
                raise ValueError("layout='wide' takes no `long` section")
            if self.timestamp.column in self.columns:
                raise ValueError(f"timestamp.column={self.timestamp.column!r} is also mapped as a metric column")
        else:
            if self.long is None:
                raise ValueError("layout='long' needs `long: {metric_column, value_column}`")
            if self.columns:
                raise ValueError("layout='long' maps metric keys under long.metrics, not `columns`")
            used = [self.timestamp.column, self.long.metric_column, self.long.value_column]
            if len(set(used)) != 3:
                raise ValueError(f"timestamp.column, long.metric_column and long.value_column must differ, got {used}")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> ReplayMapping:
        import yaml

        path = Path(path)
        try:
            document = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not YAML: {exc}") from None
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            raise ValueError(f"{path}: invalid replay mapping: {describe_errors(exc)}") from None


def describe_errors(exc: ValidationError) -> str:
    """Each problem as field=value: message."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<mapping>'}={err.get('input')!r}: {err['msg']}"
        for err in exc.errors()
    )


def resolve_metric(entry: SeriesMapping, use_case: UseCaseConfig, line_id: str, where: str) -> str:
    """The metric key an entry names, checked against the use case's metrics and taxonomy on the line."""
    roles = use_case.roles_for_line(line_id)
    if entry.metric is None:
        try:
            return use_case.key_for_role(line_id, entry.role)
        except KeyError:
            known = sorted({r.role for r in roles.values()})
            raise ValueError(
                f"{where}.role={entry.role!r}: no metric of use case {use_case.use_case!r} "
                f"carries it on line {line_id!r} (roles: {known})"
            ) from None
    if entry.metric not in use_case.accepted_metrics:
        raise ValueError(
            f"{where}.metric={entry.metric!r} is not a metric of use case {use_case.use_case!r} "
            f"({sorted(use_case.accepted_metrics)})"
        )
    if entry.role is not None:
        actual = roles.get(entry.metric)
        if actual is None or actual.role != entry.role:
            carried = actual.role if actual else None
            raise ValueError(
                f"{where}.role={entry.role!r}: metric {entry.metric!r} carries role {carried!r} on line {line_id!r}"
            )
    return entry.metric


# --- reading a recording -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Column:
    values: pd.Series
    missing: np.ndarray  # True where the file holds no value (empty CSV cell, Parquet null)


def read_columns(path: Path, wanted: Iterable[str]) -> dict[str, _Column]:
    """The wanted columns of a CSV (every cell as text) or Parquet file (typed), with their gaps."""
    path = Path(path)
    wanted = list(dict.fromkeys(wanted))
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if suffix == ".tsv" else ",")
        _require(path, wanted, list(frame.columns))
        return {c: _Column(frame[c], (frame[c] == "").to_numpy()) for c in wanted}
    if suffix in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        _require(path, wanted, table.column_names)
        columns = {}
        for c in wanted:
            arrow = table.column(c)
            columns[c] = _Column(arrow.to_pandas(), arrow.is_null().to_numpy(zero_copy_only=False))
        return columns
    raise ValueError(f"{path}: suffix {path.suffix!r} is neither CSV {CSV_SUFFIXES} nor Parquet {PARQUET_SUFFIXES}")


def _require(path: Path, wanted: list[str], present: list[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ValueError(f"{path}: the mapping names columns {missing} that the file lacks (columns: {present})")


def cell_values(column: _Column) -> list[Any]:
    """Numbers as floats (NaN and inf kept, for the buffer to refuse); text that is no number as text."""
    series = column.values
    if pd.api.types.is_bool_dtype(series):
        return series.tolist()  # the buffer refuses booleans as non-numeric
    if pd.api.types.is_numeric_dtype(series):
        return series.astype(float).tolist()
    numbers = pd.to_numeric(series, errors="coerce").astype(float)
    values = numbers.tolist()
    for i in np.flatnonzero(numbers.isna().to_numpy() & ~column.missing):
        values[i] = _number_or_text(series.iloc[i])
    return values


def _number_or_text(cell: Any) -> Any:
    try:
        return float(cell)  # "nan", "inf": numbers the buffer refuses as non-finite
    except (TypeError, ValueError):
        return cell  # the buffer refuses it as non-numeric


def parse_times(column: _Column, spec: TimestampMapping, column_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(time_ms as int64, valid mask) of a timestamp column."""
    series = column.values
    is_datetime = pd.api.types.is_datetime64_any_dtype(series)
    if spec.format in (EPOCH_S, EPOCH_MS):
        if is_datetime:
            raise ValueError(
                f"timestamp.format={spec.format!r}, but column {column_name!r} holds timestamps "
                f"({series.dtype}): use format: {ISO8601}"
            )
        numbers = pd.to_numeric(series, errors="coerce").astype(float).to_numpy()
        scaled = numbers * (1000.0 if spec.format == EPOCH_S else 1.0)
        valid = np.isfinite(scaled) & ~column.missing
        return np.where(valid, np.round(np.where(valid, scaled, 0)), 0).astype(np.int64), valid
    stamps = series if is_datetime else _parse_datetimes(series, spec)
    if stamps.dt.tz is None:
        stamps = stamps.dt.tz_localize(spec.timezone, ambiguous="NaT", nonexistent="NaT")
    valid = stamps.notna().to_numpy() & ~column.missing
    since_epoch = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")
    return since_epoch.fillna(0).astype(np.int64).to_numpy(), valid


def _parse_datetimes(series: pd.Series, spec: TimestampMapping) -> pd.Series:
    fmt = "ISO8601" if spec.format == ISO8601 else spec.format
    text = series.astype(str)
    if spec.format == ISO8601:
        # values with an offset are exact; the others are read in the mapping's time zone
        has_offset = text.str.contains(_UTC_OFFSET, regex=True).to_numpy()
        if has_offset.any() and not has_offset.all():
            aware = pd.to_datetime(text[has_offset], format=fmt, errors="coerce", utc=True)
            naive = pd.to_datetime(text[~has_offset], format=fmt, errors="coerce")
            naive = naive.dt.tz_localize(spec.timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
            return pd.concat([aware, naive]).sort_index()
        return pd.to_datetime(text, format=fmt, errors="coerce", utc=bool(has_offset.all()) and len(text) > 0)
    return pd.to_datetime(text, format=fmt, errors="coerce", utc="%z" in fmt)


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

    def _wide_rows(self, columns: dict[str, _Column], time_of: list[int | None]) -> Iterator[Row]:
        series = [
            (metric, cell_values(columns[c]), columns[c].missing.tolist()) for c, metric in self.column_metrics.items()
        ]
        for i, time_ms in enumerate(time_of):
            yield time_ms, [(metric, time_ms, values[i]) for metric, values, missing in series if not missing[i]]

    def _long_rows(self, columns: dict[str, _Column], time_of: list[int | None]) -> Iterator[Row]:
        layout = self.mapping.long
        keys = columns[layout.metric_column]
        key_text = ["" if gap else str(k) for k, gap in zip(keys.values.tolist(), keys.missing.tolist(), strict=True)]
        value_column = columns[layout.value_column]
        values = [
            None if gap else v for v, gap in zip(cell_values(value_column), value_column.missing.tolist(), strict=True)
        ]
        for key, time_ms, value in zip(key_text, time_of, values, strict=True):
            yield time_ms, [(self.key_metrics.get(key, key), time_ms, value)]

    def _report_bad_times(self, path: Path, column: _Column, valid: np.ndarray, report: ReplayReport | None) -> None:
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
        with SampleBuffer(
            gw.buffer_path,
            thing_name=gw.thing_name,
            line_id=gw.line_id,
            max_bytes=gw.buffer_max_bytes,
            fsync_policy=gw.fsync_policy,
        ) as buffer:
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
        return Mqtt5Transport(
            gw.broker_host, gw.broker_port, gw.cert_path, gw.key_path, gw.ca_path, client_id=gw.thing_name
        )


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
            raise ValueError(f"--speed: {describe_errors(exc)}") from None
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
