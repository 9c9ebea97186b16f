"""The query layer's tables, defined once: the CDK Glue tables and the DuckDB views both read this.

Each table is a Parquet dataset under one prefix of the data bucket, hive-partitioned
(`<key>=<value>/` path segments). Partition values are kept as strings on both engines, and
Athena finds partitions by projection (no crawler, no MSCK REPAIR):
- `line` is `injected`: line ids are not known when the stack deploys, so every query must pin
  the line(s) with static equality (`line = 'a'` or `line IN ('a', 'b')`); the named queries do.
- dates and months are `date` projections over a fixed start up to now; `res` is an `enum`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from edgeloop.schemas import ContextKind, names

# Glue (Hive) column type -> DuckDB type and Arrow type; the only types the tables use.
DUCKDB_TYPES = {"string": "VARCHAR", "bigint": "BIGINT", "double": "DOUBLE"}
ARROW_TYPES = {"string": pa.string(), "bigint": pa.int64(), "double": pa.float64()}

PROJECTION_START_DATE = "2020-01-01"  # the oldest event or ingest date Athena projects
RESOLUTIONS = ("1m", "5m", "1h", "1d")  # cloud/datalake/rollups.py RESOLUTIONS (checked in a test)


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # a key of DUCKDB_TYPES

    def __post_init__(self) -> None:
        if self.type not in DUCKDB_TYPES:
            raise ValueError(f"column {self.name!r}: type={self.type!r} is not one of {list(DUCKDB_TYPES)}")


@dataclass(frozen=True)
class Partition:
    """A hive partition key, always a string, with its Athena partition projection settings."""

    name: str
    projection: dict[str, str]  # projection.<name>.<setting> -> value, e.g. {"type": "injected"}
    type: str = "string"

    def table_parameters(self) -> dict[str, str]:
        return {f"projection.{self.name}.{setting}": value for setting, value in self.projection.items()}


def _injected(name: str) -> Partition:
    return Partition(name, {"type": "injected"})


def _daily(name: str) -> Partition:
    return Partition(
        name,
        {
            "type": "date",
            "format": "yyyy-MM-dd",
            "range": f"{PROJECTION_START_DATE},NOW+1DAYS",  # +1 day: a gateway clock slightly ahead
            "interval": "1",
            "interval.unit": "DAYS",
        },
    )


def _monthly(name: str) -> Partition:
    return Partition(
        name,
        {
            "type": "date",
            "format": "yyyy-MM",
            "range": f"{PROJECTION_START_DATE[:7]},NOW+1MONTHS",
            "interval": "1",
            "interval.unit": "MONTHS",
        },
    )


@dataclass(frozen=True)
class Table:
    name: str  # the Glue table and the DuckDB view
    prefix: str  # under the data bucket
    columns: tuple[Column, ...]
    partitions: tuple[Partition, ...]
    description: str
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def partition_names(self) -> list[str]:
        return [p.name for p in self.partitions]

    def location(self, bucket_uri: str) -> str:
        """s3://bucket/prefix/ given s3://bucket (or any root URI)."""
        return f"{bucket_uri.rstrip('/')}/{self.prefix}/"

    def location_template(self, bucket_uri: str) -> str:
        """Athena's storage.location.template: the prefix plus one `<key>=${<key>}/` per partition."""
        segments = "".join(f"{p.name}=${{{p.name}}}/" for p in self.partitions)
        return f"{self.location(bucket_uri)}{segments}"

    def projection_parameters(self, bucket_uri: str) -> dict[str, str]:
        params = {"projection.enabled": "true", "storage.location.template": self.location_template(bucket_uri)}
        for partition in self.partitions:
            params.update(partition.table_parameters())
        return params

    def arrow_schema(self) -> pa.Schema:
        """The data columns (not the partition keys) as a writer should type them."""
        return pa.schema([(c.name, ARROW_TYPES[c.type]) for c in self.columns])


_SAMPLE_COLUMNS = (
    Column("thing_name", "string"),
    Column("line_id", "string"),
    Column("metric", "string"),
    Column("time_ms", "bigint"),
    Column("value", "double"),
    Column("seq", "bigint"),
    Column("ingest_time_ms", "bigint"),
)


def _samples(name: str, prefix: str, date_partition: str, description: str) -> Table:
    """Curated and late samples share their columns; both are partitioned by line, then a UTC date."""
    partitions = (_injected("line"), _daily(date_partition))
    return Table(name=name, prefix=prefix, columns=_SAMPLE_COLUMNS, partitions=partitions, description=description)


CURATED_SAMPLES = _samples(
    "curated_samples",
    names.CURATED_PREFIX,
    "event_date",
    "Samples by line and event date (UTC), de-duplicated by (thing_name, seq)",
)
LATE_SAMPLES = _samples(
    "late_samples",
    names.LATE_PREFIX,
    "ingest_date",
    "Samples that arrived later than the lateness SLA, by line and ingest date (UTC)",
)
ROLLUPS = Table(
    name="rollups",
    prefix=names.ROLLUPS_PREFIX,
    columns=(
        Column("metric", "string"),
        Column("bucket_start_ms", "bigint"),
        Column("count", "bigint"),
        Column("sum", "double"),
        Column("min", "double"),
        Column("max", "double"),
        Column("sum2", "double"),
        Column("m2", "double"),
    ),
    partitions=(
        Partition("res", {"type": "enum", "values": ",".join(RESOLUTIONS)}),
        _injected("line"),
        _monthly("month"),
    ),
    description="count, sum, min, max, sum2, m2 per metric and bucket at 1m, 5m, 1h and 1d",
)
CONTEXT_SLICES = Table(
    name="context_slices",
    prefix=names.CONTEXT_SLICES_PREFIX,
    columns=(
        Column("slice_start_ms", "bigint"),
        Column("slice_end_ms", "bigint"),
        *(Column(f"{kind.value}_{part}", "string") for kind in ContextKind for part in ("id", "value")),
        Column("spec_target_metric", "string"),
        Column("spec_lower", "double"),
        Column("spec_upper", "double"),
    ),
    partitions=(_injected("line"),),
    description="Context sub-intervals of a line on the 1-minute grid: [slice_start_ms, slice_end_ms) + context",
)

TABLES: dict[str, Table] = {t.name: t for t in (CURATED_SAMPLES, LATE_SAMPLES, ROLLUPS, CONTEXT_SLICES)}
