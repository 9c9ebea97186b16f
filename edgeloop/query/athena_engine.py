"""The named queries on Athena: run in the workgroup, poll with backoff, page the results.

The workgroup enforces its result location and encryption (cdk/constructs/catalog.py), so a query
names only the workgroup and the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from edgeloop.cloud.aws import client

from .named import render

RUNNING_STATES = {"QUEUED", "RUNNING"}
FAILED_STATES = {"FAILED", "CANCELLED"}
# Athena result types -> pandas dtypes (nullable, since any value may be NULL).
_INTEGER_TYPES = {"tinyint", "smallint", "integer", "int", "bigint"}
_FLOAT_TYPES = {"double", "float", "real", "decimal"}


class AthenaQueryError(RuntimeError):
    """A query ended FAILED or CANCELLED."""

    def __init__(self, query_id: str, state: str, reason: str) -> None:
        super().__init__(f"Athena query {query_id} ended {state}: {reason}")
        self.query_id, self.state, self.reason = query_id, state, reason


class AthenaQueryTimeout(TimeoutError):
    def __init__(self, query_id: str, state: str, timeout_s: float) -> None:
        super().__init__(f"Athena query {query_id} still {state} after {timeout_s:g} s; it was stopped")
        self.query_id, self.state = query_id, state


def failure_reason(status: dict[str, Any]) -> str:
    """Why a query failed, from a QueryExecution's Status."""
    error = status.get("AthenaError") or {}
    parts = [status.get("StateChangeReason", "")]
    if error.get("ErrorType") is not None or error.get("ErrorCategory") is not None:
        parts.append(f"(error category {error.get('ErrorCategory')}, type {error.get('ErrorType')})")
    return " ".join(p for p in parts if p) or "Athena gave no reason"


class AthenaEngine:
    def __init__(
        self,
        workgroup: str,
        database: str,
        *,
        catalog: str = "AwsDataCatalog",
        timeout_s: float = 300.0,
        first_poll_s: float = 0.25,
        max_poll_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (("workgroup", workgroup), ("database", database), ("catalog", catalog)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name}={value!r} must be a non-empty string")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s={timeout_s!r} must be positive")
        self.workgroup, self.database, self.catalog = workgroup, database, catalog
        self.timeout_s, self.first_poll_s, self.max_poll_s = timeout_s, first_poll_s, max_poll_s
        self._sleep, self._clock = sleep, clock

    def sql(self, query_name: str, **params: Any) -> str:
        return render(query_name, **params)

    def run(self, query_name: str, **params: Any) -> pd.DataFrame:
        return self.execute(render(query_name, **params))

    def execute(self, sql: str) -> pd.DataFrame:
        query_id = self.start(sql)
        self.wait(query_id)
        return self.results(query_id)

    def start(self, sql: str) -> str:
        response = client("athena").start_query_execution(
            QueryString=sql,
            WorkGroup=self.workgroup,
            QueryExecutionContext={"Database": self.database, "Catalog": self.catalog},
        )
        return response["QueryExecutionId"]

    def wait(self, query_id: str) -> dict[str, Any]:
        """Poll until the query ends; its QueryExecution when it SUCCEEDED."""
        deadline = self._clock() + self.timeout_s
        delay = self.first_poll_s
        while True:
            execution = client("athena").get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
            state = execution["Status"]["State"]
            if state == "SUCCEEDED":
                return execution
            if state in FAILED_STATES:
                raise AthenaQueryError(query_id, state, failure_reason(execution["Status"]))
            if self._clock() + delay > deadline:
                client("athena").stop_query_execution(QueryExecutionId=query_id)
                raise AthenaQueryTimeout(query_id, state, self.timeout_s)
            self._sleep(delay)
            delay = min(delay * 2, self.max_poll_s)

    def results(self, query_id: str) -> pd.DataFrame:
        """Every page of a finished query as a DataFrame typed from the result metadata."""
        columns: list[dict[str, Any]] = []
        rows: list[list[str | None]] = []
        paginator = client("athena").get_paginator("get_query_results")
        for page_number, page in enumerate(paginator.paginate(QueryExecutionId=query_id)):
            result_set = page["ResultSet"]
            if page_number == 0:
                columns = result_set["ResultSetMetadata"]["ColumnInfo"]
            page_rows = [[cell.get("VarCharValue") for cell in row["Data"]] for row in result_set["Rows"]]
            # A SELECT's first row repeats the column labels.
            rows += page_rows[1:] if page_number == 0 and page_rows and columns else page_rows
        return to_frame(columns, rows)


def to_frame(columns: list[dict[str, Any]], rows: list[list[str | None]]) -> pd.DataFrame:
    names = [c["Name"] for c in columns]
    for number, row in enumerate(rows):
        if len(row) != len(names):
            raise ValueError(f"result row {number} has {len(row)} values for {len(names)} columns {names}")
    frame = pd.DataFrame(rows, columns=names, dtype=object)
    for column in columns:
        frame[column["Name"]] = _typed(frame[column["Name"]], column["Type"].lower())
    return frame


def _typed(values: pd.Series, athena_type: str) -> pd.Series:
    base = athena_type.split("(")[0]
    if base in _INTEGER_TYPES:
        return values.astype("Int64")
    if base in _FLOAT_TYPES:
        return pd.to_numeric(values).astype("float64")
    if base == "boolean":
        return values.map({"true": True, "false": False, None: None}).astype("boolean")
    if base == "date":
        return pd.to_datetime(values, format="%Y-%m-%d")
    if base.startswith("timestamp"):
        return pd.to_datetime(values)
    return values.astype("str")  # what DuckDB hands back for VARCHAR
