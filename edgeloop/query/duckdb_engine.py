"""The named queries on DuckDB over a local copy of the data bucket's Parquet.

One view per table of tables.py, under the Glue table's name, over `root/<prefix>/**/*.parquet`
with hive partitioning; partition keys are read as VARCHAR like the Glue string columns, and
every column is cast to its declared type, so a query sees the same schema on both engines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from .mirror import MirrorResult, mirror_tables
from .named import render, string_literal
from .tables import DUCKDB_TYPES, TABLES, Table


class DuckDbEngine:
    def __init__(self, root: Path, *, threads: int | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root={str(self.root)!r} is not a directory")
        self.connection = duckdb.connect(":memory:")
        if threads is not None:
            self.connection.execute(f"SET threads = {int(threads)}")
        self.refresh()

    @classmethod
    def from_bucket(cls, bucket: str, cache_dir: Path, **kwargs: Any) -> tuple[DuckDbEngine, MirrorResult]:
        """Mirror every table prefix of `bucket` into cache_dir, then open an engine over it."""
        mirrored = mirror_tables(bucket, Path(cache_dir))
        return cls(cache_dir, **kwargs), mirrored

    def refresh(self) -> None:
        """(Re)create the views; needed when a table without files gains its first file."""
        for table in TABLES.values():
            self.connection.execute(view_sql(table, self.root))

    def sql(self, query_name: str, **params: Any) -> str:
        return render(query_name, **params)

    def run(self, query_name: str, **params: Any) -> pd.DataFrame:
        return self.execute(render(query_name, **params))

    def execute(self, sql: str) -> pd.DataFrame:
        return self.connection.execute(sql).df()

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> DuckDbEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def view_sql(table: Table, root: Path) -> str:
    """CREATE VIEW for one table; a typed, empty view while no file exists (read_parquet would fail)."""
    columns = [(c.name, c.type) for c in table.columns] + [(p.name, p.type) for p in table.partitions]
    directory = Path(root) / table.prefix
    if not any(directory.rglob("*.parquet")):
        select = ", ".join(f'CAST(NULL AS {DUCKDB_TYPES[kind]}) AS "{name}"' for name, kind in columns)
        return f'CREATE OR REPLACE VIEW "{table.name}" AS SELECT {select} WHERE false'
    select = ", ".join(f'CAST("{name}" AS {DUCKDB_TYPES[kind]}) AS "{name}"' for name, kind in columns)
    hive_types = ", ".join(f"{string_literal(p.name)}: {DUCKDB_TYPES[p.type]}" for p in table.partitions)
    source = (
        f"read_parquet({string_literal(str(directory / '**' / '*.parquet'))}, hive_partitioning = true, "
        f"hive_types = {{{hive_types}}}, union_by_name = true)"
    )
    return f'CREATE OR REPLACE VIEW "{table.name}" AS SELECT {select} FROM {source}'
