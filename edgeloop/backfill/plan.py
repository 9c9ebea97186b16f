"""Planning a backfill: read and check the mapping, the identity and every file; write nothing.

Everything that can be wrong with the mapping, the use case, the files' columns, timestamps or
context configuration is found here, before anything is written (BackfillError naming key, value
and file).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from edgeloop.cloud.datalake.context_store import strict_interval
from edgeloop.cloud.line_directory import LineDirectory, StaticLineDirectory
from edgeloop.device_shims import recording_context
from edgeloop.device_shims.replay_mapping import ReplayMapping, resolve_metric
from edgeloop.schemas import UseCaseConfig
from edgeloop.schemas.common import IDENTIFIER, ThingName

from .recording import BackfillError, Recording, check_slots, read_bytes, read_recording


@dataclass
class Series:
    column: str  # the file column (wide layout; a long layout's metrics come from its key column)
    metric: str


@dataclass
class BackfillPlan:
    mapping: ReplayMapping
    mapping_path: Path
    mapping_sha256: str
    use_case: UseCaseConfig
    line_id: str
    thing_name: str
    series: list[Series]  # wide: column -> metric, in the order samples are laid out
    recordings: list[Recording]


def plan_backfill(
    files: list[Path],
    mapping_path: Path,
    *,
    line_id: str,
    use_case: UseCaseConfig,
    thing_name: str | None = None,
    lines: LineDirectory | None = None,
) -> BackfillPlan:
    """Read the mapping and every file and check them all; raises BackfillError before any write.
    The plan holds every file's bytes and mapped columns in memory until run_backfill lands them.

    `lines`: the IoT registry (default: none consulted). A thing it knows must be on `line_id`; a
    thing it does not know is taken on the operator's word (the --line given).
    """
    mapping_path = Path(mapping_path)
    mapping_bytes = read_bytes(mapping_path, "mapping")
    try:
        mapping = ReplayMapping.from_file(mapping_path)
    except (ValueError, OSError) as exc:
        raise BackfillError(str(exc)) from None
    line_id, thing_name = _identity(mapping, mapping_path, line_id, thing_name, lines)
    series = _series(mapping, mapping_path, use_case, line_id)
    if not files:
        raise BackfillError("no recording given: name one or more CSV or Parquet files")
    columns = [s.column for s in series]
    recordings = [read_recording(Path(f), mapping, mapping_path, columns, use_case, line_id) for f in files]
    _check_runs_across_files(recordings)
    _check_intervals_storable(recordings)
    return BackfillPlan(
        mapping=mapping,
        mapping_path=mapping_path,
        mapping_sha256=hashlib.sha256(mapping_bytes).hexdigest(),
        use_case=use_case,
        line_id=line_id,
        thing_name=thing_name,
        series=series,
        recordings=recordings,
    )


def _identity(
    mapping: ReplayMapping, mapping_path: Path, line_id: str, thing_name: str | None, lines: LineDirectory | None
) -> tuple[str, str]:
    if not isinstance(line_id, str) or not IDENTIFIER.match(line_id):
        raise BackfillError(f"--line={line_id!r} is not a line id ({IDENTIFIER.pattern})")
    if mapping.line_id is not None and mapping.line_id != line_id:
        raise BackfillError(f"{mapping_path}: line_id={mapping.line_id!r} differs from --line={line_id!r}")
    if thing_name is None:
        thing_name = mapping.thing_name or f"backfill-{line_id}"
    elif mapping.thing_name is not None and mapping.thing_name != thing_name:
        raise BackfillError(f"{mapping_path}: thing_name={mapping.thing_name!r} differs from --thing={thing_name!r}")
    try:
        TypeAdapter(ThingName).validate_python(thing_name)
    except ValidationError as exc:
        raise BackfillError(f"--thing={thing_name!r} is not a thing name: {exc.errors()[0]['msg']}") from None
    registered = (lines or StaticLineDirectory({})).line_of(thing_name)
    if registered is not None and registered != line_id:
        raise BackfillError(
            f"--line={line_id!r}: the IoT registry holds line {registered!r} for thing {thing_name!r} "
            f"(pass --line {registered} or another --thing)"
        )
    return line_id, thing_name


def _series(mapping: ReplayMapping, mapping_path: Path, use_case: UseCaseConfig, line_id: str) -> list[Series]:
    """Wide: each mapped column with its metric, by metric name (curated order). Long: none."""
    if mapping.layout != "wide":
        for key, entry in mapping.long.metrics.items():
            _resolve(entry, use_case, line_id, f"long.metrics.{key}", mapping_path)
        return []
    series = [
        Series(column, _resolve(entry, use_case, line_id, f"columns.{column}", mapping_path))
        for column, entry in mapping.columns.items()
    ]
    check_slots({s.metric for s in series} | use_case.accepted_metrics, mapping_path)
    return sorted(series, key=lambda s: s.metric)


def _resolve(entry, use_case: UseCaseConfig, line_id: str, where: str, mapping_path: Path) -> str:
    try:
        return resolve_metric(entry, use_case, line_id, where)
    except ValueError as exc:
        raise BackfillError(f"{mapping_path}: {exc}") from None


def _check_runs_across_files(recordings: list[Recording]) -> None:
    if len(recordings) < 2:
        return
    try:
        # Refuses runs overlapping across files; joins an interval going on from one file into the next.
        joined = dict(recording_context.join_recordings([(str(r.path), r.intervals) for r in recordings]))
    except ValueError as exc:
        raise BackfillError(str(exc)) from None
    for recording in recordings:
        recording.intervals = joined.get(str(recording.path), recording.intervals)


def _check_intervals_storable(recordings: list[Recording]) -> None:
    """Every context interval meets the context path's rule (context_store.strict_interval), checked
    now so that none is refused once samples have landed."""
    for recording in recordings:
        for interval in recording.intervals:
            try:
                strict_interval(interval.model_dump(mode="json"))
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(p) for p in error["loc"])
                raise BackfillError(
                    f"{recording.path}: context interval {interval.interval_id!r}: {where}={error.get('input')!r} "
                    f"{error['msg']}"
                ) from None
