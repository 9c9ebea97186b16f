"""Curated parts are stored with their time and sequence columns delta-encoded (curated.DELTA_COLUMNS):
what pyarrow and DuckDB (the local Athena) read back is what was written, in about a third of the bytes."""

from __future__ import annotations

import io

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from edgeloop.cloud.datalake.curated import (
    CURATED_SCHEMA,
    DELTA_COLUMNS,
    curated_parquet_bytes,
    dedupe_and_sort,
    read_curated_part,
)
from edgeloop.device_shims.extrusion import ExtrusionLineSimulator

T0 = 1_767_225_600_000


def an_hour_of_a_line() -> pd.DataFrame:
    samples = ExtrusionLineSimulator("line-1", seed=3, start_ms=T0).advance(3600)
    rows = pd.DataFrame(samples, columns=["metric", "time_ms", "value"])
    rows = rows.assign(thing_name="gw-1", line_id="line-1", seq=np.arange(len(rows)))
    rows["ingest_time_ms"] = rows["time_ms"] // 60_000 * 60_000 + 61_000  # a batch a minute
    return dedupe_and_sort(rows[CURATED_SCHEMA.names])


def test_a_part_reads_back_equal_in_arrow_and_duckdb_and_is_a_third_of_the_dictionary_size(tmp_path):
    rows = an_hour_of_a_line()
    table = pa.Table.from_pandas(rows, schema=CURATED_SCHEMA, preserve_index=False)
    body = curated_parquet_bytes(table)
    metadata = pq.ParquetFile(io.BytesIO(body)).metadata
    encodings = {metadata.schema.column(i).name: metadata.row_group(0).column(i).encodings for i in range(7)}
    assert all("DELTA_BINARY_PACKED" in encodings[name] for name in DELTA_COLUMNS), encodings
    pd.testing.assert_frame_equal(read_curated_part(body), rows)
    path = tmp_path / "part.parquet"
    path.write_bytes(body)
    from_duckdb = duckdb.connect().execute(f"SELECT * FROM read_parquet('{path}')").df()
    pd.testing.assert_frame_equal(from_duckdb, rows, check_dtype=False)
    dictionary = io.BytesIO()
    pq.write_table(table, dictionary, compression="zstd")  # how parts were stored before
    assert len(body) * 2.5 < len(dictionary.getvalue()), (len(body), len(dictionary.getvalue()))
