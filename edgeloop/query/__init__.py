"""One query layer: the same named SQL on DuckDB over local Parquet and on Athena in AWS."""

from .athena_engine import AthenaEngine, AthenaQueryError, AthenaQueryTimeout
from .duckdb_engine import DuckDbEngine
from .mirror import MirrorResult, mirror_prefix, mirror_tables
from .named import NamedQuery, QueryParameterError, UnknownQueryError, get_query, queries, render
from .tables import TABLES, Table

__all__ = [
    "AthenaEngine",
    "AthenaQueryError",
    "AthenaQueryTimeout",
    "DuckDbEngine",
    "MirrorResult",
    "NamedQuery",
    "QueryParameterError",
    "TABLES",
    "Table",
    "UnknownQueryError",
    "get_query",
    "mirror_prefix",
    "mirror_tables",
    "queries",
    "render",
]
