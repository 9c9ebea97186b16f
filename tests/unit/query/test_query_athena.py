"""AthenaEngine against moto: the SQL sent, polling with backoff, typed paged results, failures."""

from __future__ import annotations

import boto3
import pytest
import requests
from moto import mock_aws
from moto.athena.models import athena_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_api import state_manager

from edgeloop.query import AthenaEngine, AthenaQueryError, AthenaQueryTimeout, QueryParameterError, render
from edgeloop.query.athena_engine import failure_reason
from edgeloop.schemas import names

REGION = "eu-west-1"
PARAMS = {
    "line": "line-a",
    "metric": "pressure",
    "resolution": "1h",
    "start_ms": 1_769_896_800_000,
    "end_ms": 1_769_911_200_000,
}


def column(name: str, athena_type: str) -> dict:
    return {"Name": name, "Label": name, "Type": athena_type, "Nullable": "UNKNOWN", "CaseSensitive": False}


def row(*values) -> dict:
    return {"Data": [{} if v is None else {"VarCharValue": v} for v in values]}


def queue_result(rows: list[dict], columns: list[dict]) -> None:
    """moto's documented way to set what the next query returns (moto/athena/models.py)."""
    response = requests.post(
        "http://motoapi.amazonaws.com/moto-api/static/athena/query-results",
        json={"account_id": DEFAULT_ACCOUNT_ID, "region": REGION, "results": [{"rows": rows, "column_info": columns}]},
    )
    assert response.status_code == 201


class Clock:
    """A fake clock that sleeping advances, recording each delay."""

    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture()
def athena(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        client = boto3.client("athena", region_name=REGION)
        client.create_work_group(Name=names.ATHENA_WORKGROUP, Configuration={"EnforceWorkGroupConfiguration": True})
        yield client
    state_manager.unset_transition("athena::execution")


def engine(clock: Clock, **kwargs) -> AthenaEngine:
    return AthenaEngine(
        names.ATHENA_WORKGROUP, names.GLUE_DATABASE, sleep=clock.sleep, clock=lambda: clock.now, **kwargs
    )


def test_run_sends_the_bound_sql_to_the_workgroup_and_types_the_result(athena):
    queue_result(
        [
            row("metric", "bucket_start_ms", "count", "mean", "variance"),  # Athena's header row
            row("pressure", "1769896800000", "360", "250.5", "9.25"),
            row("pressure", "1769900400000", "360", None, "8.5"),
        ],
        [
            column("metric", "varchar"),
            column("bucket_start_ms", "bigint"),
            column("count", "bigint"),
            column("mean", "double"),
            column("variance", "double"),
        ],
    )
    clock = Clock()
    frame = engine(clock).run("rollups", **PARAMS)
    assert frame.columns.tolist() == ["metric", "bucket_start_ms", "count", "mean", "variance"]
    assert frame["bucket_start_ms"].tolist() == [1769896800000, 1769900400000]
    assert str(frame["count"].dtype) == "Int64" and frame["mean"].dtype == "float64"
    assert frame["mean"].isna().tolist() == [False, True] and frame["variance"].tolist() == [9.25, 8.5]
    assert frame["metric"].tolist() == ["pressure", "pressure"]
    (execution,) = athena.list_query_executions(WorkGroup=names.ATHENA_WORKGROUP)["QueryExecutionIds"]
    sent = athena.get_query_execution(QueryExecutionId=execution)["QueryExecution"]
    assert sent["Query"] == render("rollups", **PARAMS)
    assert sent["QueryExecutionContext"] == {"Database": names.GLUE_DATABASE, "Catalog": "AwsDataCatalog"}
    assert sent["WorkGroup"] == names.ATHENA_WORKGROUP


def test_polling_backs_off_until_the_query_succeeds(athena):
    state_manager.set_transition(model_name="athena::execution", transition={"progression": "manual", "times": 3})
    queue_result([row("n"), row("7")], [column("n", "bigint")])
    clock = Clock()
    frame = engine(clock, first_poll_s=0.5, max_poll_s=1.5).run(
        "late_rows_per_day", lines="line-a", from_date="2026-01-01", to_date="2026-01-31"
    )
    assert frame["n"].tolist() == [7]
    assert clock.sleeps[:4] == [0.5, 1.0, 1.5, 1.5]  # doubling, capped


def test_a_failed_query_raises_naming_the_query_id_and_state(athena, monkeypatch):
    backend = athena_backends[DEFAULT_ACCOUNT_ID][REGION]
    original = type(backend).start_query_execution

    def start_and_fail(self, *args, **kwargs):
        query_id = original(self, *args, **kwargs)
        self.executions[query_id].status = "FAILED"  # moto never fails a query on its own
        return query_id

    monkeypatch.setattr(type(backend), "start_query_execution", start_and_fail)
    with pytest.raises(AthenaQueryError) as raised:
        engine(Clock()).run("rollups", **PARAMS)
    (query_id,) = athena.list_query_executions(WorkGroup=names.ATHENA_WORKGROUP)["QueryExecutionIds"]
    assert raised.value.query_id == query_id and raised.value.state == "FAILED"
    assert query_id in str(raised.value) and "FAILED" in str(raised.value)


def test_failure_reason_names_athena_reason_and_error_type():
    status = {
        "State": "FAILED",
        "StateChangeReason": "COLUMN_NOT_FOUND: line 3:5: Column 'x' cannot be resolved",
        "AthenaError": {"ErrorCategory": 2, "ErrorType": 1006},
    }
    assert (
        failure_reason(status)
        == "COLUMN_NOT_FOUND: line 3:5: Column 'x' cannot be resolved (error category 2, type 1006)"
    )
    assert failure_reason({"State": "CANCELLED"}) == "Athena gave no reason"
    error = AthenaQueryError("q-1", "CANCELLED", "stopped by user")
    assert str(error) == "Athena query q-1 ended CANCELLED: stopped by user"


def test_a_query_still_running_at_the_timeout_is_stopped(athena):
    state_manager.set_transition(model_name="athena::execution", transition={"progression": "manual", "times": 1000})
    clock = Clock()
    with pytest.raises(AthenaQueryTimeout, match=r"still (QUEUED|RUNNING) after 3 s"):
        engine(clock, timeout_s=3, first_poll_s=1, max_poll_s=1).run("rollups", **PARAMS)
    (query_id,) = athena.list_query_executions(WorkGroup=names.ATHENA_WORKGROUP)["QueryExecutionIds"]
    state_manager.unset_transition("athena::execution")
    assert athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]["Status"]["State"] == "CANCELLED"
    assert sum(clock.sleeps) <= 3


def test_bad_parameters_never_reach_athena(athena):
    with pytest.raises(QueryParameterError, match=r"start_ms='yesterday'"):
        engine(Clock()).run("rollups", **{**PARAMS, "start_ms": "yesterday"})
    assert athena.list_query_executions(WorkGroup=names.ATHENA_WORKGROUP)["QueryExecutionIds"] == []


@pytest.mark.parametrize("kwargs", [{"workgroup": ""}, {"database": None}, {"timeout_s": 0}])
def test_engine_settings_are_validated(kwargs):
    settings = {"workgroup": "wg", "database": "db", **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AthenaEngine(**settings)
